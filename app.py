"""3D Face Studio web app: `python app.py` (http://127.0.0.1:7860, or PORT=8000 python app.py); a Space runs it too."""

import os

from demo.ui import LAUNCH_OPTIONS, build_demo

demo = build_demo()  # the queue (size, concurrency) is configured inside build_demo

if __name__ == "__main__":
    demo.launch(server_port=int(os.environ.get("PORT", "7860")), **LAUNCH_OPTIONS)
