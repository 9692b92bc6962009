"""3D Face Studio web app (placeholder until the app issue lands: the Gradio UI lives in demo/ui).

For now this runs a smoke render with the tiny random model so `python app.py` proves the install.
"""

from __future__ import annotations

import sys


def main() -> int:
    import torch

    import demo

    model = demo.load_generator("tiny")
    camera = demo.camera_from_angles(yaw_deg=20.0, radius=model.config.avg_camera_radius)
    with torch.inference_mode():
        ws = model.mapping(torch.randn(1, model.z_dim), demo.conditioning_camera(), truncation_psi=0.7)
        image = model.synthesis(ws, camera)["image"]
    print(f"3D Face Studio {demo.__version__}: tiny random model rendered {tuple(image.shape)}; the web UI arrives with the app issue.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
