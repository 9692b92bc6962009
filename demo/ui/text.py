"""Long text of the web app: header, model notes, licences, citations, running locally, the API."""

from __future__ import annotations

from collections.abc import Sequence

from demo.weights.registry import CheckpointEntry

TITLE = "3D Face Studio"

HEADER = """\
# 3D Face Studio
Faces, depth and coloured 3D meshes from NVIDIA's **EG3D**, run by our own pure-PyTorch code.
Pick a seed and a viewpoint, download the mesh, rotate the face in a video or morph between faces.
Everything here is also a Python library and a command line (`python -m demo --help`).
"""

EG3D_BIBTEX = """\
@inproceedings{chan2022eg3d,
  author    = {Chan, Eric R. and Lin, Connor Z. and Chan, Matthew A. and Nagano, Koki and Pan, Boxiao and
               De Mello, Shalini and Gallo, Orazio and Guibas, Leonidas and Tremblay, Jonathan and
               Khamis, Sameh and Karras, Tero and Wetzstein, Gordon},
  title     = {Efficient Geometry-aware {3D} Generative Adversarial Networks},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2022}
}"""

RUN_LOCALLY = """\
### Run it yourself
```bash
pip install -r requirements.txt
python app.py                                   # http://127.0.0.1:7860 (PORT=8000 python app.py for another port)
python -m demo download eg3d-ffhqrebalanced512-128   # optional: fetch + convert the default model beforehand
```
Without a network the app still starts: put the official `.pkl` in `checkpoints/original/` (or point
`DEMO_CHECKPOINTS_DIR` at a folder that has it; set `HF_TOKEN` for gated Hugging Face mirrors), or use
the **tiny** model, an interface preview with random weights (not faces). A GPU is used when present.
"""

API_USAGE = """\
### Call it from code
Every button is an API endpoint; `pip install gradio_client`, then:
```python
from gradio_client import Client, handle_file

client = Client("http://127.0.0.1:7860/")          # or "<user>/<space>" for a Hugging Face Space
image, depth, mesh_glb, files = client.predict(
    model_id="eg3d-ffhqrebalanced512-128", seed=42, truncation=0.7, yaw_deg=20, pitch_deg=0,
    mesh_resolution=128, api_name="/generate")
seed = client.predict(api_name="/random_seed")
video, files = client.predict(
    model_id="eg3d-ffhqrebalanced512-128", source="seed", seed=42, truncation=0.7, face_file=None,
    trajectory="orbit", frames=60, fps=30, mode="image", yaw_range_deg=35, pitch_deg=0, save_frames=False,
    api_name="/rotate")
image, depth, mesh_glb, files, face_file = client.predict(
    model_id="eg3d-ffhqrebalanced512-128", photo=handle_file("selfie.jpg"), preset="fast", api_name="/photo_to_3d")
video, files = client.predict(  # your photo's face, passed on as its file
    model_id="eg3d-ffhqrebalanced512-128", source="face file", seed=0, truncation=0.7,
    face_file=handle_file(face_file), trajectory="yaw", frames=60, fps=30, mode="image", yaw_range_deg=35,
    pitch_deg=0, save_frames=False, api_name="/rotate")
video, strip, files = client.predict(
    model_id="eg3d-ffhqrebalanced512-128", seeds="7", truncation=0.7,
    face_files=[handle_file(face_file)],  # face or ws files first, then the seeds
    interpolation="slerp", frames=60, fps=30, loop=False, camera="static", api_name="/interpolate")
```
Results are paths of downloaded copies. Image outputs are what the page shows: renders shorter than 256 px are
enlarged by a whole factor (nearest neighbour, named `..._x8.png`); the files output holds every PNG at its true size.
`client.view_api()` lists every parameter and its range.
"""

EMBED = """\
### Embed it in a page
```html
<script type="module" src="https://gradio.s3-us-west-2.amazonaws.com/6.31.0/gradio.js"></script>
<gradio-app src="https://<user>-<space>.hf.space"></gradio-app>
```
or `<iframe src="https://<user>-<space>.hf.space" width="100%" height="900"></iframe>`.
"""


def about_markdown(entries: Sequence[CheckpointEntry], preview_label: str) -> str:
    """The About tab: models with licences and sources, citations, running locally, the API."""
    rows = [
        f"| `{entry.id}` | {entry.description} | {entry.licence} ([text]({entry.licence_url})) | "
        + ", ".join(f"[{_host(url)}]({url})" for url in entry.urls)
        + " |"
        for entry in entries
    ]
    rows.append(f"| `tiny` | {preview_label}: a small randomly initialised generator for trying the interface | — | built in |")
    table = "\n".join(rows)
    return f"""\
## Models
| id | what | licence | sources |
| --- | --- | --- | --- |
{table}

The EG3D weights are NVIDIA's, under the **NVIDIA Source Code License for EG3D: non-commercial use only**;
results made with them inherit that licence. Mirrors on the Hugging Face Hub are third-party copies of the same
files. This app never runs code from checkpoint files: pickles are read by a restricted loader and converted to
safetensors once. The network code, renderer and tools here are our own implementation written from the paper.

### Cite
If you use EG3D results, cite the paper (Chan et al., CVPR 2022):
```bibtex
{EG3D_BIBTEX}
```

### Files you get
Images are 8-bit PNGs; the `_depth.png` is 16-bit (1 count = 1e-4 world units along each ray; background rays hold the far end of their range, so use the `_alpha.png`) and
`_depth_color.png` a preview (near = bright). Meshes are in world units, y up, the face looking towards +z, with
vertex colours (`.glb` shows them in browsers; `.ply`/`.obj` for MeshLab and Blender). `_ws.npy` holds the latent
(1, num_ws, w_dim) and `.face.safetensors` the face — upload either to Rotate, Multi-view, Interpolate or Edit — and
`_camera.npy` the 25-number EG3D camera label.

{RUN_LOCALLY}
{API_USAGE}
{EMBED}"""


def _host(url: str) -> str:
    return "Hugging Face" if "huggingface.co" in url else "NVIDIA NGC" if "nvidia.com" in url else url.split("/")[2]
