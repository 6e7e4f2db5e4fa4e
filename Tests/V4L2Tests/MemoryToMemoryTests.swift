import SystemPackage
import CV4L2
import V4L2
import V4L2Simulator
import FrameBridgeTestSupport
import XCTest

/// The memory-to-memory layer on the host: role classification from format lists, the queue pair
/// from the capability bits, the encoder and decoder command structures, the codec control ids,
/// DQBUF's EPIPE, and a capture-only simulated device that is none of it.
final class MemoryToMemoryTests: XCTestCase {
    private func format(_ code: String, _ bufferType: BufferType, compressedFlag: Bool = false) -> FormatDescription {
        FormatDescription(FourCC(code)!, bufferType: bufferType, flags: compressedFlag ? FormatDescription.flagCompressed : 0,
                          description: code)
    }

    func testRoleFromFormatsOnEachSide() {
        // vicodec's stateful encoder: raw in, FWHT (flagged compressed) out.
        let raw = ["YU12", "NV12", "YUYV", "RGB3"].map { format($0, .videoOutput) }
        let fwht = [format("FWHT", .videoCapture, compressedFlag: true)]
        XCTAssertEqual(MemoryToMemoryRole.classify(output: raw, capture: fwht), .encoder)
        // Its decoder: FWHT in, raw out.
        let fwhtIn = [format("FWHT", .videoOutput, compressedFlag: true)]
        let rawOut = ["YU12", "NV12"].map { format($0, .videoCapture) }
        XCTAssertEqual(MemoryToMemoryRole.classify(output: fwhtIn, capture: rawOut), .decoder)
        // vim2m: raw on both sides.
        XCTAssertEqual(MemoryToMemoryRole.classify(output: [format("RGB3", .videoOutput)],
                                                   capture: [format("YUYV", .videoCapture), format("RGBP", .videoCapture)]), .converter)
        // A hardware H.264 encoder whose driver does not set the flag: known by its fourcc.
        XCTAssertEqual(MemoryToMemoryRole.classify(output: [format("NV12", .videoOutputMultiplanar)],
                                                   capture: [format("H264", .videoCaptureMultiplanar)]), .encoder)
        // A JPEG transcoder (compressed on both sides) decodes first.
        XCTAssertEqual(MemoryToMemoryRole.classify(output: [format("JPEG", .videoOutput)], capture: [format("MJPG", .videoCapture)]), .decoder)
        // A queue without formats says nothing.
        XCTAssertNil(MemoryToMemoryRole.classify(output: [], capture: fwht))
        XCTAssertNil(MemoryToMemoryRole.classify(output: raw, capture: []))

        let description = MemoryToMemoryDescription(queues: .singlePlanar, outputFormats: raw, captureFormats: fwht)
        XCTAssertEqual(description.role, .encoder)
        XCTAssertEqual(MemoryToMemoryRole.encoder.description, "encoder")
    }

    func testQueuePairFromCapabilities() {
        func caps(_ flags: CapabilityFlags) -> DeviceCapabilities {
            DeviceCapabilities(driver: "d", card: "c", busInfo: "b", version: "6.1.0",
                               capabilities: flags.union([.deviceCaps]), deviceCapabilities: flags)
        }
        XCTAssertEqual(caps([.videoM2M, .streaming]).memoryToMemoryQueues, .singlePlanar)
        XCTAssertEqual(caps([.videoM2MMultiplanar, .streaming]).memoryToMemoryQueues, .multiplanar)
        XCTAssertEqual(caps([.videoCapture, .videoOutput, .streaming]).memoryToMemoryQueues, .singlePlanar)
        XCTAssertNil(caps([.videoCapture, .streaming]).memoryToMemoryQueues)
        XCTAssertNil(caps([.videoCaptureMultiplanar, .videoOutput]).memoryToMemoryQueues)
        XCTAssertFalse(caps([.videoCapture]).isMemoryToMemory)
        XCTAssertTrue(caps([.videoM2MMultiplanar]).isMemoryToMemory)
        // A memory-to-memory node is not a capture device to the capture pin.
        XCTAssertFalse(caps([.videoM2M, .streaming]).canCapture)
        XCTAssertEqual(MemoryToMemoryQueues.multiplanar.output, .videoOutputMultiplanar)
        XCTAssertEqual(MemoryToMemoryQueues.multiplanar.capture, .videoCaptureMultiplanar)
        XCTAssertTrue(MemoryToMemoryQueues.multiplanar.isMultiplanar)
        XCTAssertFalse(MemoryToMemoryQueues.singlePlanar.isMultiplanar)
    }

    func testEncoderCommandStructure() {
        XCTAssertEqual(EncoderCommand.Kind.start.rawValue, UInt32(V4L2_ENC_CMD_START))
        XCTAssertEqual(EncoderCommand.Kind.stop.rawValue, UInt32(V4L2_ENC_CMD_STOP))
        XCTAssertEqual(EncoderCommand.Kind.pause.rawValue, UInt32(V4L2_ENC_CMD_PAUSE))
        XCTAssertEqual(EncoderCommand.Kind.resume.rawValue, UInt32(V4L2_ENC_CMD_RESUME))
        XCTAssertEqual(EncoderCommand.Flags.stopAtGOPEnd.rawValue, UInt32(V4L2_ENC_CMD_STOP_AT_GOP_END))

        let stop = EncoderCommand(.stop, flags: .stopAtGOPEnd)
        let raw = stop.raw
        XCTAssertEqual(raw.cmd, UInt32(V4L2_ENC_CMD_STOP))
        XCTAssertEqual(raw.flags, UInt32(V4L2_ENC_CMD_STOP_AT_GOP_END))
        XCTAssertEqual(EncoderCommand(raw: raw), stop)
        XCTAssertEqual(EncoderCommand.stop.raw.flags, 0)
        var unknown = v4l2_encoder_cmd()
        unknown.cmd = 99
        XCTAssertNil(EncoderCommand(raw: unknown))
        XCTAssertEqual(MemoryLayout<v4l2_encoder_cmd>.size, 40)
        XCTAssertEqual("\(EncoderCommand.Kind.stop)", "V4L2_ENC_CMD_STOP")
    }

    func testDecoderCommandStructure() {
        XCTAssertEqual(DecoderCommand.Kind.start.rawValue, UInt32(V4L2_DEC_CMD_START))
        XCTAssertEqual(DecoderCommand.Kind.stop.rawValue, UInt32(V4L2_DEC_CMD_STOP))
        XCTAssertEqual(DecoderCommand.Kind.flush.rawValue, UInt32(V4L2_DEC_CMD_FLUSH))
        XCTAssertEqual(DecoderCommand.Flags.toBlack.rawValue, UInt32(V4L2_DEC_CMD_STOP_TO_BLACK))
        XCTAssertEqual(DecoderCommand.Flags.immediately.rawValue, UInt32(V4L2_DEC_CMD_STOP_IMMEDIATELY))
        XCTAssertEqual(DecoderCommand.Flags.muteAudio.rawValue, UInt32(V4L2_DEC_CMD_START_MUTE_AUDIO))

        let stop = DecoderCommand(.stop, flags: .immediately, stopPTS: 123_456)
        XCTAssertEqual(stop.raw.stop.pts, 123_456)
        XCTAssertEqual(DecoderCommand(raw: stop.raw), stop)
        let start = DecoderCommand(.start, startSpeed: 1000, startFormat: 1)
        XCTAssertEqual(start.raw.start.speed, 1000)
        XCTAssertEqual(start.raw.start.format, 1)
        XCTAssertEqual(DecoderCommand(raw: start.raw), start)
        XCTAssertEqual(DecoderCommand.stop.raw.cmd, UInt32(V4L2_DEC_CMD_STOP))
        XCTAssertEqual(MemoryLayout<v4l2_decoder_cmd>.size, 72)
    }

    func testCodecControlIDs() {
        // The numbers of <linux/v4l2-controls.h>: the codec class base 0x990900 plus the offset.
        XCTAssertEqual(ControlID.videoGOPSize, 0x0099_0900 + 203)
        XCTAssertEqual(ControlID.videoBitrate, 0x0099_0900 + 207)
        XCTAssertEqual(ControlID.videoForceKeyFrame, 0x0099_0900 + 229)
        XCTAssertEqual(ControlID.fwhtIFrameQP, 0x0099_0900 + 290)
        XCTAssertEqual(ControlID.fwhtPFrameQP, 0x0099_0900 + 291)
        XCTAssertEqual(ControlID.minimumBuffersForOutput, ControlID.minimumBuffersForCapture + 1)
        for control in EncoderControl.allCases {
            XCTAssertEqual(EncoderControl(id: control.id), control)
        }
        XCTAssertNil(EncoderControl(id: ControlID.minimumBuffersForCapture))
        XCTAssertEqual(EncoderControl.fwhtIFrameQP.description, "V4L2_CID_FWHT_I_FRAME_QP")
    }

    func testEPIPEAfterTheLastBufferIsTyped() {
        let epipe = V4L2Error(device: "/dev/video9", operation: "VIDIOC_DQBUF", errno: .brokenPipe)
        XCTAssertTrue(epipe.isAfterLastBuffer)
        XCTAssertTrue(epipe.description.contains("LAST"), epipe.description)
        XCTAssertFalse(V4L2Error(device: "/dev/video9", operation: "VIDIOC_DQBUF", errno: .ioError).isAfterLastBuffer)
        XCTAssertFalse(V4L2Error(device: "/dev/video9", operation: "write", errno: .brokenPipe).isAfterLastBuffer)
        XCTAssertEqual(BufferFlags.last.rawValue, UInt32(V4L2_BUF_FLAG_LAST))
        XCTAssertEqual(EventType.endOfStream.rawValue, UInt32(V4L2_EVENT_EOS))
        let eos = DeviceEvent(type: UInt32(V4L2_EVENT_EOS))
        XCTAssertTrue(eos.isEndOfStream)
    }

    /// The simulated capture device is no memory-to-memory device: no description, and the
    /// codec ioctls fail with ENOTTY and a hint, typed.
    func testCaptureDeviceIsNotMemoryToMemory() throws {
        let backend = makeBackend()
        let device = try VideoDevice(path: videoPath, backend: backend)
        XCTAssertFalse(device.capabilities.isMemoryToMemory)
        XCTAssertNil(device.memoryToMemoryQueues)
        XCTAssertNil(try device.memoryToMemoryDescription())
        let error = expectError { () throws(V4L2Error) in try device.encoderCommand(.stop) }
        XCTAssertEqual(error?.operation, "VIDIOC_ENCODER_CMD")
        XCTAssertEqual(error?.errno, .inappropriateIOCTLForDevice)
        XCTAssertEqual(error?.hint, "the device is not a stateful encoder")
        let tryError = expectError { () throws(V4L2Error) in try device.tryDecoderCommand(.stop) }
        XCTAssertEqual(tryError?.operation, "VIDIOC_TRY_DECODER_CMD")
        XCTAssertEqual(try device.encoderControls(), [:])
    }
}
