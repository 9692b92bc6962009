"""Hostile inputs, run one after another in ONE process (see tests/test_hostile.py, which caps its memory).

Each case must end in a ``DemoError`` (a message for the user) quickly; after each one the official-format
fixture (or, without ../shared, a fake snapshot) must still load, proving that no case poisoned the process.
Prints one JSON line per case: name, outcome, error type, message, seconds, peak RSS in MB.

Run as ``python -m tests.hostile_cases OUT_DIR`` from the repository root.
"""

from __future__ import annotations

import io
import json
import pickle
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from demo.errors import DemoError

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "eg3d" / "tiny_ffhq_structure.pkl"


def _config_folder(out: Path, name: str, change) -> Path:
    from demo.weights.store import CONFIG_FILE, build_tiny_generator, save_generator

    folder = save_generator(build_tiny_generator(), out / name)
    data = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps(change(data)))
    return folder


def _npy(path: Path, shape, dtype="<f4", payload=b"\0" * 64) -> Path:
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": dtype, "fortran_order": False, "shape": shape})
        handle.write(payload)
    return path


def cases(out: Path):
    from PIL import Image

    from demo.media import load_npy
    from demo.tasks.faces import load_photo
    from demo.tasks.interpolate import load_keyframes
    from demo.tasks.sample import parse_seeds
    from demo.weights import nvlabs_pickle
    from demo.weights.store import load_generator

    def mapping(data, **changes):
        return {**data, "mapping": {**data["mapping"], **changes}}

    yield "config.json is a list", lambda: load_generator(_config_folder(out, "list", lambda d: [d]))
    yield "config.json is a string", lambda: load_generator(_config_folder(out, "string", lambda d: "x"))
    yield "z_dim 5e6", lambda: load_generator(_config_folder(out, "zdim", lambda d: mapping(d, z_dim=5_000_000)))
    yield "1e7 mapping layers", lambda: load_generator(_config_folder(out, "layers", lambda d: mapping(d, num_layers=10**7)))
    yield "resolution 65536", lambda: load_generator(
        _config_folder(out, "res", lambda d: {**d, "synthesis": {**d["synthesis"], "resolution": 65536}}))
    yield "NaN ray_start", lambda: load_generator(
        _config_folder(out, "nan", lambda d: {**d, "render": {**d["render"], "ray_start": float("nan"), "ray_end": 3.0}}))

    yield "ws.npy claims 1e12 rows", lambda: load_keyframes([_npy(out / "rows_ws.npy", (10**12, 8, 16))], num_ws=8, w_dim=16)
    yield "npy of pickled objects", lambda: load_npy(_npy(out / "objects.npy", (3,), dtype="|O"))

    def huge_photo():
        path = out / "huge.png"
        Image.new("L", (13000, 13000), 128).save(path)
        return load_photo(path)

    yield "13000x13000 grey PNG", huge_photo

    storage = nvlabs_pickle._Storage(torch.zeros(1, dtype=torch.float64).untyped_storage(), torch.float64)
    yield "stride-0 view of one float64", lambda: nvlabs_pickle._rebuild_tensor_v2(storage, 0, (2**29,), (0,))
    yield "tensor size 2**62 x 2**62", lambda: nvlabs_pickle._rebuild_tensor_v2(storage, 0, (2**62, 2**62), (1, 1))

    def snapshot_with_blob(label: str, blob_of):
        from tests.fakes import nvlabs as fakes
        from tests.test_nvlabs_pickle import ATTRIBUTES, INIT_KWARGS, tiny_state_dict

        state = tiny_state_dict()
        path = out / f"{label}.pkl"
        blob = blob_of(fakes, state["decoder.net.0.weight"])
        fakes.write_snapshot_with_storage_blob(path, state, INIT_KWARGS, ATTRIBUTES, tensor_name="decoder.net.0.weight", blob=blob)
        return nvlabs_pickle.read_official_generator(path)

    def huge_count(fakes, tensor):
        blob = fakes.legacy_storage_blob(tensor)
        at = len(blob) - tensor.numel() * tensor.element_size() - 8
        return blob[:at] + (2**40).to_bytes(8, "little") + blob[at + 8 :]

    yield "storage claims 2**40 elements", lambda: snapshot_with_blob("count", huge_count)

    def pickle_kwargs(label: str, **changes):
        from tests.fakes import nvlabs as fakes
        from tests.test_nvlabs_pickle import ATTRIBUTES, INIT_KWARGS, tiny_state_dict

        path = out / f"{label}.pkl"
        fakes.write_official_snapshot(path, tiny_state_dict(), {**INIT_KWARGS, **changes}, ATTRIBUTES)
        return load_generator(path)

    yield "pickle with z_dim 5e6", lambda: pickle_kwargs("pzdim", z_dim=5_000_000)
    yield "pickle with 1e7 mapping layers", lambda: pickle_kwargs("players", mapping_kwargs={"num_layers": 10**7})
    def unread(fakes, tensor):
        blob = fakes.legacy_storage_blob(tensor)
        keys = pickle.dumps(["0"], protocol=2)
        return blob[: blob.rfind(keys)] + pickle.dumps([], protocol=2)  # the key list skips the storage: never read

    yield "storage that is never read", lambda: snapshot_with_blob("unread", unread)
    yield "complex storage", lambda: snapshot_with_blob(
        "complex", lambda fakes, tensor: fakes.legacy_storage_blob(torch.zeros(tensor.numel(), dtype=torch.complex64)))

    name = b"__defaults__"
    build = (
        pickle.PROTO + b"\x02" + pickle.GLOBAL + b"torch._utils\n_rebuild_tensor_v2\n" + pickle.NONE + pickle.EMPTY_DICT
        + pickle.BINUNICODE + len(name).to_bytes(4, "little") + name + pickle.EMPTY_TUPLE + pickle.SETITEM
        + pickle.TUPLE2 + pickle.BUILD + pickle.STOP
    )
    yield "BUILD on an allowed function", lambda: nvlabs_pickle.RestrictedUnpickler(io.BytesIO(build)).load()

    def shared_references():
        node: list = []
        for _ in range(64):
            node = [node, node]
        return nvlabs_pickle.to_plain({"kwargs": node})  # 2**64 paths, 64 containers: must finish at once

    yield "shared references 64 deep (completes)", shared_references

    deep = pickle.PROTO + b"\x02" + pickle.MARK * 200_000 + pickle.TUPLE * 200_000 + pickle.STOP
    yield "tuples nested 200000 deep", lambda: _read_generator(out / "deep.pkl", deep)
    yield "seeds 'abc'", lambda: parse_seeds("abc")

    def truncation_text():
        from demo.ui.runtime import read_number

        return read_number("0.7x", "Truncation", 0, 1)

    yield "truncation '0.7x'", truncation_text


def _read_generator(path: Path, data: bytes):
    from demo.weights.nvlabs_pickle import read_official_generator

    path.write_bytes(data)
    return read_official_generator(path)


def _fixture_loads(out: Path) -> bool:
    from demo.weights.nvlabs_pickle import read_official_generator

    if REFERENCE.is_file():
        generator = read_official_generator(REFERENCE)
    else:  # without ../shared: a snapshot written by the test fakes
        from tests.fakes import nvlabs as fakes
        from tests.test_nvlabs_pickle import ATTRIBUTES, INIT_KWARGS, tiny_state_dict

        path = out / "fake.pkl"
        fakes.write_official_snapshot(path, tiny_state_dict(), INIT_KWARGS, ATTRIBUTES)
        generator = read_official_generator(path)
    return bool(generator.state_dict)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, case in cases(out):
        started = time.perf_counter()
        try:
            case()
            outcome, kind, message = "completed", "", ""
        except DemoError as error:
            outcome, kind, message = "refused", type(error).__name__, str(error)
        except BaseException as error:  # noqa: BLE001 - a traceback reaching a user is exactly what this reports
            outcome, kind, message = "escaped", type(error).__name__, str(error)[:300]
        seconds = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        fixture = _fixture_loads(out)
        print(json.dumps({"name": name, "outcome": outcome, "type": kind, "message": message[:300],
                          "seconds": round(seconds, 3), "peak_mb": round(peak_mb), "fixture_loads": fixture}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
