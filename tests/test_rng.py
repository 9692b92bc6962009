"""Per-item generators: a seed renders the same alone or in a batch."""

from __future__ import annotations

import pytest
import torch

from demo.cameras import camera_from_angles, conditioning_camera
from demo.rng import draw

pytestmark = pytest.mark.usefixtures("single_thread")


def test_draw_single_generator_equals_default_after_seed():
    torch.manual_seed(7)
    expected = torch.rand(2, 5)
    assert torch.equal(draw((2, 5), torch.Generator().manual_seed(7), device="cpu"), expected)


def test_draw_splits_batch_between_generators():
    out = draw((4, 3), [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)], device="cpu")
    assert torch.equal(out[:2], torch.rand(2, 3, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(out[2:], torch.rand(2, 3, generator=torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="cannot split"):
        draw((3, 3), [torch.Generator(), torch.Generator()], device="cpu")


@pytest.mark.parametrize("noise_mode", ["const", "random"])
def test_batch_with_per_item_generators_equals_singles(tiny_generator, noise_mode):
    z = torch.randn(2, tiny_generator.z_dim, generator=torch.Generator().manual_seed(0))
    cameras = camera_from_angles(yaw_deg=[10.0, -20.0])
    with torch.inference_mode():
        ws = tiny_generator.mapping(z, conditioning_camera(), truncation_psi=0.7)
        batch = tiny_generator.synthesis(
            ws, cameras, noise_mode=noise_mode, rng=[torch.Generator().manual_seed(s) for s in (11, 12)]
        )
        for index, seed in enumerate((11, 12)):
            single = tiny_generator.synthesis(
                ws[index : index + 1], cameras[index : index + 1], noise_mode=noise_mode, rng=torch.Generator().manual_seed(seed)
            )
            for key in ("image", "image_raw"):
                assert torch.allclose(batch[key][index], single[key][0], atol=1e-5), key
