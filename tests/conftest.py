"""Shared fixtures: a seeded RNG and a tiny synthetic VoxCeleb-layout corpus."""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_VOXCELEB = REPO.parent / "shared" / "data" / "voxceleb"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session", autouse=True)
def _private_export_cache(tmp_path_factory):
    """No test writes ONNX exports into the user's cache (arw_sv.runtime.cache_dir)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARW_SV_CACHE", str(tmp_path_factory.mktemp("arw_sv_cache")))
        yield


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """The ``tiny`` synth preset (16 speakers, 1 s clips), generated once per session."""
    from arw_sv.synth import generate_corpus, preset

    return generate_corpus(tmp_path_factory.mktemp("tiny_corpus"), preset("tiny"), progress=False)


@pytest.fixture(scope="session")
def tiny_manifests(tiny_corpus, tmp_path_factory):
    """(train manifest path, test manifest path) of the tiny corpus."""
    from arw_sv.data.manifest import build_manifest, write_manifest

    folder = tmp_path_factory.mktemp("manifests")
    manifest = build_manifest(tiny_corpus.root, tiny_corpus.meta_path)
    write_manifest(manifest.subset("dev"), folder / "train.csv")
    write_manifest(manifest.subset("test"), folder / "test.csv")
    return folder / "train.csv", folder / "test.csv"


def tiny_config(out_dir: Path, train_manifest: Path, *overrides: str):
    """The shipped tiny config pointed at a manifest and an output folder."""
    from arw_sv.config import load_config
    from arw_sv.demo import config_path

    return load_config(
        config_path("tiny"),
        [f"data.train_manifest={train_manifest}", f"train.out_dir={out_dir}", *overrides],
    )


@contextlib.contextmanager
def gloo_group(rank: int, world: int, init_file: str):
    """A gloo process group for a spawned test worker, torn down without racing the peer.

    A rank that destroys its group, or exits, while another still talks to it can take gloo
    down with ``terminate called without an active exception`` (SIGABRT; seen once in CI
    even after a barrier). So, when the body succeeded: every rank waits at a barrier,
    destroys its group, waits on the file system until every rank has destroyed its group,
    and then ends its process with ``os._exit(0)``, skipping the interpreter finalisation
    in which gloo's worker threads can still abort. A failing body only destroys the group
    and raises, so ``mp.spawn`` reports its traceback. A short timeout keeps a failed peer
    from hanging CI for gloo's default 30 minutes.
    """
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=300),
    )
    try:
        yield
        torch.distributed.barrier()
    except BaseException:
        torch.distributed.destroy_process_group()
        raise
    torch.distributed.destroy_process_group()
    Path(f"{init_file}.down{rank}").touch()
    deadline = time.monotonic() + 120
    while not all(Path(f"{init_file}.down{r}").exists() for r in range(world)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {rank}: a peer never tore its gloo group down")
        time.sleep(0.05)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
