print("framedump: not yet built")
