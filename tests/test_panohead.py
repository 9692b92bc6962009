"""PanoHead on the tiny model: tri-grid lookup, density crop, background, camera offset, loading, tools."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import trimesh

from demo.cameras import camera_from_angles
from demo.cli import main
from demo.config import GeneratorConfig, PanoHeadConfig, SuperResConfig
from demo.networks.panohead import PanoHeadGenerator, build_generator
from demo.render.planes import sample_trigrid
from demo.tasks import mesh as mesh_task
from demo.tasks import video
from demo.tasks.sample import sample_images
from demo.weights import store
from demo.weights.convert import official_kwargs
from tests.fakes.nvlabs import write_official_snapshot

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def tiny_panohead():
    return store.build_tiny_generator(panohead=True)


def test_trigrid_axes_and_depth_padding():
    # One channel per plane; slice value = 1 everywhere, so the lookup shows the zero-padding fade.
    grids = torch.ones(1, 3, 1, 1, 4, 4)
    for w, factor in ((0.0, 1.0), (0.5, 0.75), (1.0, 0.5)):
        points = torch.tensor([[[0.0, 0.0, w / 2]]])  # coordinates are scaled by 2 / box_warp
        features = sample_trigrid(grids, points, box_warp=1.0)[0, :, 0, 0]
        # Plane 0 reads z as its depth axis: (1 - |w| / 2) with D = 1; planes 1 and 2 read z as height.
        assert features[0].item() == pytest.approx(factor)
    ramp = torch.zeros(1, 3, 1, 1, 4, 4)
    ramp[..., :, :] = torch.arange(4.0).reshape(1, 4)  # varies along width
    points = torch.tensor([[[0.3, 0.2, 0.2]]])  # y = z: planes 0 and 1 fade equally on their depth axes
    values = sample_trigrid(ramp, points, box_warp=1.0)[0, :, 0, 0]
    # Width axis: plane 0 reads x, plane 1 x, plane 2 y; the ramp sits at pixel position ((2u + 1) * 4 - 1) / 2.
    fade = 1 - 0.4 / 2
    assert values[0].item() == pytest.approx(2.7 * fade)
    assert values[1].item() == pytest.approx(2.7 * fade)
    assert values[2].item() == pytest.approx(2.3 * (1 - 0.6 / 2))  # plane 2's depth axis is x


def test_density_crop_empties_the_sides(tiny_panohead):
    ws = sample_images(tiny_panohead, seeds=[1]).ws
    side = camera_from_angles(yaw_deg=90.0, radius=2.7, pivot=(0, 0, 0))
    with torch.inference_mode():
        cropped = tiny_panohead.synthesis(torch.from_numpy(ws), side, rng=torch.Generator().manual_seed(0), return_extras=True)
        uncropped_model = build_generator(dataclasses.replace(tiny_panohead.config, panohead=dataclasses.replace(tiny_panohead.config.panohead, density_crop=None)))
        uncropped_model.load_state_dict(tiny_panohead.state_dict())
        uncropped = uncropped_model.eval().synthesis(torch.from_numpy(ws), side, rng=torch.Generator().manual_seed(0), return_extras=True)
    assert cropped["image_alpha"].mean() < uncropped["image_alpha"].mean()
    assert torch.allclose(cropped["image_mask"], cropped["image_alpha"] * 1.002 - 0.001)


def test_background_fills_transparent_pixels(tiny_panohead):
    ws = torch.from_numpy(sample_images(tiny_panohead, seeds=[2]).ws)
    camera = camera_from_angles(yaw_deg=0.0, radius=2.7, pivot=(0, 0, 0), fov_deg=60.0)  # wide: many rays miss
    with torch.inference_mode():
        out = tiny_panohead.synthesis(ws, camera, rng=torch.Generator().manual_seed(0), return_extras=True)
        background = tiny_panohead.background(ws)
    empty = out["image_alpha"][0, 0] < 1e-6
    assert empty.any()
    resized = torch.nn.functional.interpolate(background, size=out["feature_image"].shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(out["feature_image"][0][:, empty], resized[0][:, empty], atol=1e-5)


def test_forward_adds_the_camera_offset(tiny_panohead):
    z = torch.randn(1, tiny_panohead.z_dim, generator=torch.Generator().manual_seed(3))
    camera = camera_from_angles(yaw_deg=120.0, radius=2.7, pivot=(0, 0, 0))
    with torch.inference_mode():
        offset = tiny_panohead.camera_offset(z, camera)
        label = tiny_panohead.offset_camera(z, camera)
        direct = tiny_panohead(z, camera, rng=torch.Generator().manual_seed(1))
        ws = tiny_panohead.mapping(z, camera)
        manual = tiny_panohead.synthesis(ws, label, rng=torch.Generator().manual_seed(1))
    assert offset.abs().sum() > 0
    assert torch.equal(label[0, [3, 7, 11]], camera.to_label()[0, [3, 7, 11]] + offset[0])
    assert torch.equal(direct["image"], manual["image"])


OTHER_PANOHEAD = dataclasses.replace(
    GeneratorConfig.panohead512(),
    mapping=dataclasses.replace(GeneratorConfig.panohead512().mapping, z_dim=32),
    synthesis=dataclasses.replace(GeneratorConfig.panohead512().synthesis, resolution=64, channel_base=256, channel_max=8),
    render=dataclasses.replace(GeneratorConfig.panohead512().render, neural_rendering_resolution=32, depth_samples=8, importance_samples=4),
    superres=SuperResConfig(variant="2X", image_resolution=128, num_fp16_res=0),
    panohead=PanoHeadConfig(
        triplane_depth=1, decoder_activation="sigmoid", use_torgb_raw=False, use_background=False,
        background_channel_base=128, background_channel_max=8,
    ),
    extras={},
)


def test_official_snapshot_of_another_panohead_configuration(tmp_path):
    """Depth 1, sigmoid decoder, no background, no ToRGB, 2X SR: written officially, read back equal."""
    torch.manual_seed(0)
    model = build_generator(OTHER_PANOHEAD).eval()
    init_kwargs, attributes = official_kwargs(OTHER_PANOHEAD)
    classes = {"t_mapping": "MappingNetwork", "decoder": "OSGDecoder", "renderer": "ImportanceRenderer", "renderer.ray_marcher": "MipRayMarcher2"}
    pkl = tmp_path / "panohead-other.pkl"
    write_official_snapshot(pkl, model.state_dict(), init_kwargs, attributes, classes=classes)
    loaded = store.generator_from_pickle(pkl)
    assert isinstance(loaded, PanoHeadGenerator)
    # The converter derives the background network's widths from the backbone's (as the official code does).
    assert dataclasses.replace(loaded.config, panohead=OTHER_PANOHEAD.panohead) == OTHER_PANOHEAD
    z = torch.randn(1, 32, generator=torch.Generator().manual_seed(5))
    camera = camera_from_angles(yaw_deg=150.0, radius=2.7, pivot=(0, 0, 0.2))
    with torch.inference_mode():
        a = model(z, camera, truncation_psi=0.7, rng=torch.Generator().manual_seed(2))
        b = loaded(z, camera, truncation_psi=0.7, rng=torch.Generator().manual_seed(2))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    folder = store.convert_checkpoint(pkl, tmp_path / "converted")
    again = store.load_generator(folder)
    assert isinstance(again, PanoHeadGenerator) and again.config == loaded.config


def test_full_turn_video_and_back_views(tmp_path, tiny_panohead):
    ws = sample_images(tiny_panohead, seeds=[0]).ws
    result = video.render_video(tiny_panohead, ws, video.turntable(6), tmp_path / "turn.mp4", fps=6)
    assert result.num_frames == 6
    views = video.render_multiview(tiny_panohead, ws, [(180.0, 0.0), (270.0, -10.0)], tmp_path / "mv", stem="seed0000")
    assert len(views.images) == 2


def test_mesh_and_cli(tmp_path, tiny_panohead):
    ws = sample_images(tiny_panohead, seeds=[0]).ws
    result = mesh_task.extract_mesh(tiny_panohead, ws, resolution=32)
    assert trimesh.Trimesh(result.vertices, result.faces, process=False).is_watertight
    assert np.abs(result.vertices[:, [0, 2]]).max() <= 0.4 + 1.0 / 31, "the renderer's crop applies to meshes"
    out = tmp_path / "cli"
    assert main(["generate", "--model", "tiny-panohead", "--seeds", "3", "--shapes", "--shape-res", "24", "--outdir", str(out)]) == 0
    assert (out / "seed0003.glb").is_file()
    assert main(["video", "--model", "tiny-panohead", "--seeds", "3", "--trajectory", "360", "--frames", "4", "--outdir", str(out)]) == 0
    assert (out / "seed0003_360.mp4").is_file()
