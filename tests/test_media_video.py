"""demo.media video helpers: mp4 (H.264 / yuv420p / faststart), GIF, PNG frame sets, tiling."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.errors import InputError
from demo.media import (
    VideoInfo,
    read_video_frames,
    read_video_info,
    save_frames,
    tile_frames,
    write_gif,
    write_video,
)


def _gradient_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(T, H, W, 3) uint8: a smooth diagonal gradient that slides one pixel to the right per frame."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = []
    for t in range(num_frames):
        red = 40 + 160 * (xx - t) / width
        green = 40 + 160 * yy / height
        blue = 120 + 60 * np.sin((xx + yy + 2 * t) / 20)
        frames.append(np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8))
    return np.stack(frames)


def _top_level_boxes(data: bytes) -> list[str]:
    """Types of the top-level ISO-BMFF boxes (ftyp, moov, mdat, ...) in file order."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:  # 64-bit size follows the type
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:  # box runs to the end of the file
            size = len(data) - offset
        assert size >= 8, f"corrupt box at {offset}"
        boxes.append(kind.decode("latin-1"))
        offset += size
    assert offset == len(data), "boxes do not tile the file"
    return boxes


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*"))


# ---------------------------------------------------------------------------------------------
# write_video / read_video_info / read_video_frames


def test_write_video_is_h264_yuv420p_constant_rate_faststart_and_decodes_close(tmp_path):
    frames = _gradient_frames(12)
    path = write_video(tmp_path / "out" / "sweep.mp4", frames, fps=24)
    assert path == tmp_path / "out" / "sweep.mp4"
    assert _leftovers(tmp_path / "out") == ["sweep.mp4"]

    info = read_video_info(path)
    assert info == VideoInfo(num_frames=12, width=64, height=48, fps=24.0, codec="h264", pix_fmt="yuv420p")
    assert isinstance(info.fps, float)

    boxes = _top_level_boxes(path.read_bytes())
    assert boxes[0] == "ftyp"
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat"), f"not faststart: {boxes}"

    decoded = read_video_frames(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    diff = np.abs(decoded.astype(np.int16) - frames.astype(np.int16))
    assert diff.mean() < 3, diff.mean()
    # Frames stay in order: each decoded frame is closest to its own input frame.
    errors = np.abs(decoded[:, None].astype(np.int16) - frames[None].astype(np.int16)).mean(axis=(2, 3, 4))
    np.testing.assert_array_equal(errors.argmin(axis=1), np.arange(12))


def test_write_video_crf_changes_quality(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    fine = write_video(tmp_path / "fine.mp4", frames, crf=10)
    coarse = write_video(tmp_path / "coarse.mp4", frames, crf=45)
    assert fine.stat().st_size > 2 * coarse.stat().st_size


def test_write_video_pads_odd_sizes_by_replicating_the_edge(tmp_path):
    # Left half black, right half white; odd size 33 x 17. The padded column/row repeats the edge.
    frame = np.zeros((17, 33, 3), dtype=np.uint8)
    frame[:, 17:] = 255
    path = write_video(tmp_path / "odd.mp4", np.stack([frame] * 3), fps=10)
    info = read_video_info(path)
    assert (info.width, info.height) == (34, 18)
    decoded = read_video_frames(path)
    assert decoded.shape == (3, 18, 34, 3)
    assert decoded[:, :, -1].mean() > 200  # padded column is white like the right edge, not black
    assert decoded[:, -1, :8].mean() < 40  # padded row under the black half stays black


def test_write_video_streams_a_generator(tmp_path):
    source = _gradient_frames(5, 16, 24)
    consumed = []

    def frames():
        for index, frame in enumerate(source):
            consumed.append(index)
            yield frame

    path = write_video(tmp_path / "gen.mp4", (frame for frame in frames()), fps=30.0)
    assert consumed == [0, 1, 2, 3, 4]
    info = read_video_info(path)
    assert (info.num_frames, info.width, info.height, info.fps) == (5, 24, 16, 30.0)


def test_write_video_accepts_a_list_and_non_integer_fps(tmp_path):
    path = write_video(tmp_path / "list.mp4", list(_gradient_frames(3, 16, 16)), fps=12.5)
    info = read_video_info(path)
    assert info.num_frames == 3
    assert info.fps == pytest.approx(12.5)


@pytest.mark.parametrize(
    "frames",
    [np.zeros((0, 16, 16, 3), np.uint8), [], iter([])],
    ids=["empty-array", "empty-list", "empty-iterator"],
)
def test_write_video_refuses_no_frames(tmp_path, frames):
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", frames)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["clip.gif", "clip.mov", "clip", "clip.mp4.part"])
def test_write_video_refuses_other_suffixes(tmp_path, name):
    with pytest.raises(ValueError, match=r"\.mp4"):
        write_video(tmp_path / name, _gradient_frames(2, 16, 16))
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "frames"),
    [
        ({"fps": 0}, None),
        ({"fps": float("nan")}, None),
        ({"crf": 52}, None),
        ({"crf": 18.5}, None),
        ({}, np.zeros((2, 16, 16, 3), np.float32)),
        ({}, np.zeros((2, 16, 16, 4), np.uint8)),
        ({}, np.zeros((16, 16, 3), np.uint8)),
    ],
    ids=["fps-0", "fps-nan", "crf-52", "crf-float", "float-frames", "rgba-frames", "one-frame-3d"],
)
def test_write_video_refuses_bad_arguments(tmp_path, kwargs, frames):
    frames = _gradient_frames(2, 16, 16) if frames is None else frames
    with pytest.raises(ValueError):
        write_video(tmp_path / "bad.mp4", frames, **kwargs)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "bad",
    [np.zeros((16, 18, 3), np.uint8), np.zeros((16, 16, 3), np.float32), np.zeros((16, 16), np.uint8)],
    ids=["other-size", "float", "grey"],
)
def test_write_video_failure_mid_stream_leaves_no_file(tmp_path, bad):
    good = _gradient_frames(4, 16, 16)

    def frames():
        yield good[0]
        yield good[1]
        yield bad
        yield good[3]

    with pytest.raises(ValueError, match="frame"):
        write_video(tmp_path / "sub" / "broken.mp4", frames())
    assert _leftovers(tmp_path / "sub") == []


def test_write_video_exception_from_the_source_leaves_no_file_and_keeps_an_old_one(tmp_path):
    target = tmp_path / "clip.mp4"
    write_video(target, _gradient_frames(2, 16, 16))
    before = target.read_bytes()

    def frames():
        yield from _gradient_frames(3, 16, 16)
        raise KeyboardInterrupt  # e.g. Ctrl-C while rendering

    with pytest.raises(KeyboardInterrupt):
        write_video(target, frames())
    assert _leftovers(tmp_path) == ["clip.mp4"]
    assert target.read_bytes() == before


def test_read_video_info_refuses_garbage_and_missing_files(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video " * 50)
    with pytest.raises(InputError, match="not a readable video"):
        read_video_info(garbage)
    with pytest.raises(InputError, match="not a readable video"):
        read_video_frames(garbage)
    with pytest.raises(InputError, match="does not exist"):
        read_video_info(tmp_path / "missing.mp4")
    with pytest.raises(InputError):
        read_video_info(tmp_path)


def test_read_video_info_reads_a_truncated_file_as_an_error(tmp_path):
    path = write_video(tmp_path / "ok.mp4", _gradient_frames(4, 16, 16))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(path.read_bytes()[:200])  # cut inside the moov index
    with pytest.raises(InputError):
        read_video_info(truncated)


# ---------------------------------------------------------------------------------------------
# write_gif


def test_write_gif_frames_duration_and_loop(tmp_path):
    frames = _gradient_frames(6, 40, 30)
    path = write_gif(tmp_path / "g" / "anim.gif", frames, fps=10)
    assert _leftovers(tmp_path / "g") == ["anim.gif"]
    with Image.open(path) as image:
        assert image.format == "GIF"
        assert image.n_frames == 6
        assert image.size == (30, 40)
        assert image.info["loop"] == 0  # forever
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            durations.append(image.info["duration"])
        assert durations == [100] * 6
        image.seek(3)
        roundtrip = np.asarray(image.convert("RGB")).astype(np.int16)
    assert np.abs(roundtrip - frames[3]).mean() < 8  # palette quantisation only


def test_write_gif_plays_once_without_loop_and_stores_rounded_duration(tmp_path):
    path = write_gif(tmp_path / "once.gif", iter(_gradient_frames(3, 8, 8)), fps=20, loop=False)
    with Image.open(path) as image:
        assert image.n_frames == 3
        assert "loop" not in image.info
        assert image.info["duration"] == 50  # round(1000 / 20)


def test_write_gif_default_fps_duration_is_whole_hundredths(tmp_path):
    # 15 fps asks for round(1000 / 15) = 67 ms; GIF keeps hundredths of a second, so 60 ms.
    path = write_gif(tmp_path / "d.gif", _gradient_frames(2, 8, 8))
    with Image.open(path) as image:
        assert image.info["duration"] == 60


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((300, 200), 100, (100, 67)),
        ((120, 600), 512, (102, 512)),
        ((50, 40), 512, (50, 40)),
        ((700, 10), None, (700, 10)),
    ],
)
def test_write_gif_max_side(tmp_path, size, max_side, expected):
    width, height = size
    frames = _gradient_frames(2, height, width)
    path = write_gif(tmp_path / "s.gif", frames, max_side=max_side)
    with Image.open(path) as image:
        assert image.size == expected
        assert max(image.size) <= (max_side or max(size))


def test_write_gif_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_gif(tmp_path / "a.gif", [])
    with pytest.raises(ValueError):
        write_gif(tmp_path / "a.gif", _gradient_frames(2, 8, 8), fps=-1)
    with pytest.raises(ValueError):
        write_gif(tmp_path / "a.gif", _gradient_frames(2, 8, 8), max_side=0)
    with pytest.raises(ValueError, match="frame"):
        write_gif(tmp_path / "a.gif", [np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)])
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# save_frames / tile_frames


def test_save_frames_names_count_and_content(tmp_path):
    frames = _gradient_frames(3, 8, 10)
    paths = save_frames(tmp_path / "frames", frames)
    assert [p.name for p in paths] == ["frame0000.png", "frame0001.png", "frame0002.png"]
    assert _leftovers(tmp_path / "frames") == ["frame0000.png", "frame0001.png", "frame0002.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(paths[2])), frames[2])

    paths = save_frames(tmp_path / "other", (f for f in frames[:2]), stem="yaw_")
    assert [p.name for p in paths] == ["yaw_0000.png", "yaw_0001.png"]
    with pytest.raises(ValueError):
        save_frames(tmp_path, frames, stem="../x")


def test_tile_frames_concatenates_along_width():
    left = np.full((4, 5, 3), 10, np.uint8)
    right = np.full((4, 3, 3), 200, np.uint8)
    tiled = tile_frames([left, right])
    assert tiled.shape == (4, 8, 3) and tiled.dtype == np.uint8
    np.testing.assert_array_equal(tiled[:, :5], left)
    np.testing.assert_array_equal(tiled[:, 5:], right)

    sequences = tile_frames(
        [np.zeros((7, 4, 5, 3), np.uint8), np.ones((7, 4, 6, 3), np.uint8), np.zeros((7, 4, 1, 3), np.uint8)]
    )
    assert sequences.shape == (7, 4, 12, 3)
    assert sequences[:, :, 5:11].min() == 1 and sequences[:, :, 11].max() == 0


def test_tile_frames_resizes_to_the_first_height_with_nearest():
    first = np.zeros((4, 4, 3), np.uint8)
    second = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # half the height
    tiled = tile_frames([first, second])
    assert tiled.shape == (4, 10, 3)  # width 3 scaled by 2
    upscaled = tiled[:, 4:]
    np.testing.assert_array_equal(upscaled, second.repeat(2, axis=0).repeat(2, axis=1))

    shrunk = tile_frames([np.zeros((2, 3, 2, 3), np.uint8), np.zeros((2, 4, 4, 3), np.uint8)])
    assert shrunk.shape == (2, 3, 5, 3)  # height 4 -> 3, width 4 -> 3


def test_tile_frames_refuses_mixed_input():
    with pytest.raises(ValueError):
        tile_frames([])
    with pytest.raises(ValueError):
        tile_frames([np.zeros((4, 4, 3), np.uint8), np.zeros((2, 4, 4, 3), np.uint8)])
    with pytest.raises(ValueError):
        tile_frames([np.zeros((2, 4, 4, 3), np.uint8), np.zeros((3, 4, 4, 3), np.uint8)])
    with pytest.raises(ValueError):
        tile_frames([np.zeros((4, 4, 3), np.float32)])


def test_importing_media_does_not_import_imageio():
    import subprocess
    import sys

    code = "import sys, demo.media; print('imageio' in sys.modules, 'imageio_ffmpeg' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"


def test_videos_are_tagged_bt709_limited_range(tmp_path):
    import subprocess

    import imageio_ffmpeg

    frames = np.zeros((3, 32, 32, 3), np.uint8)
    frames[:, :, :16] = (200, 30, 60)
    frames[:, :, 16:] = (20, 180, 90)
    path = write_video(tmp_path / "tagged.mp4", frames, fps=10)
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    assert "yuv420p(tv, bt709, progressive)" in probe.stderr, probe.stderr
    back = read_video_frames(path).astype(int)
    assert np.abs(back[:, 4:28, 2:14] - frames[:, 4:28, 2:14]).max() <= 3  # decoded with the same matrix
