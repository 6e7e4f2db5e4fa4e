/// The page at `/` (and `/N/`): each camera's live picture (an `<img>` on its `/stream`) and a
/// statistics panel that reads `/state` once a second. Self-contained: no script or style from
/// elsewhere.
enum LivePage {
    static func html(cameras: Int, only: Int?) -> String {
        let shown = only.map { [$0] } ?? Array(0..<cameras)
        let prefix = only == nil ? "" : "../"
        let pictures = shown.map { index in
            let stream = cameras == 1 && only == nil ? "stream" : (only == nil ? "\(index)/stream" : "stream")
            return """
                <figure><img id="camera\(index)" src="\(stream)" alt="camera \(index)">
                <figcaption id="caption\(index)">camera \(index)</figcaption></figure>
            """
        }.joined(separator: "\n")
        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>framedump live view</title>
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <style>
        body { margin: 0; background: #111; color: #ddd; font: 14px/1.4 sans-serif; }
        main { display: flex; flex-wrap: wrap; gap: 8px; padding: 8px; }
        figure { margin: 0; }
        img { display: block; max-width: 100%; background: #000; }
        figcaption, #stats { font-family: monospace; font-size: 12px; }
        #stats { position: fixed; right: 8px; bottom: 8px; background: rgba(0,0,0,.7); padding: 6px 8px; white-space: pre; }
        </style></head>
        <body><main>
        \(pictures)
        </main>
        <div id="stats">statistics: waiting for /state</div>
        <script>
        const shown = [\(shown.map(String.init).joined(separator: ","))];
        async function refresh() {
          try {
            const state = await (await fetch("\(prefix)state", {cache: "no-store"})).json();
            const lines = [`clients ${state.clients}/${state.maxClients}`];
            for (const c of state.cameras) {
              if (!shown.includes(c.index)) continue;
              const f = c.format ? `${c.format.width}x${c.format.height} ${c.format.pixelFormat}` : "no format";
              lines.push(`#${c.index} ${c.device} ${c.status} ${f}`);
              lines.push(`  captured ${c.captured} (${c.capturedFps.toFixed(1)} fps) sent ${c.sentFps.toFixed(1)} fps drops ${c.driverDropped} viewers ${c.viewers.length}`);
              const caption = document.getElementById(`caption${c.index}`);
              if (caption) caption.textContent = `camera ${c.index}: ${c.device}, ${c.status}, ${f}`;
            }
            document.getElementById("stats").textContent = lines.join("\\n");
          } catch (e) {
            document.getElementById("stats").textContent = "statistics: " + e;
          }
        }
        refresh();
        setInterval(refresh, 1000);
        </script>
        </body></html>
        """
    }
}
