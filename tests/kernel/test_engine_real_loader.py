"""The engine's kernel steps with the real loader (RealKexec on a fake root, syscall faked)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from liveupd.assembly import make_engine
from liveupd.backends import dryrun
from liveupd.config import Config
from liveupd.errors import SignatureRejected
from liveupd.kernel.arch import ARCHES, Arch
from liveupd.kernel.loader import RealKexec
from liveupd.transition.context import StageRequest
from liveupd.transition.engine import Engine, Transition
from liveupd.transition.phases import ExecMode, TransitionState
from tests.devices.fakes import OURS
from tests.kernel.conftest import FakeKernel, Machine

TARGET = "6.1.0-56-cloud-amd64"


def engine_for(config: Config, machine: Machine) -> Engine:
    sim = dryrun.make(config.state_dir)
    kexec = RealKexec(config, root=machine.root, arch=ARCHES[Arch.X86_64])
    return make_engine(config, dataclasses.replace(sim, kexec=kexec), events=lambda e: None)


def test_stage_loads_and_cancel_unloads(
    config: Config, machine: Machine, fake_kernel: FakeKernel
) -> None:
    engine = engine_for(config, machine)

    async def go() -> Transition:
        t = await engine.stage(StageRequest(kernel=TARGET))
        assert machine.read("sys/kernel/kexec_loaded") == "1\n"
        await engine.cancel(t)
        return t

    t = asyncio.run(go())
    assert t.state is TransitionState.CANCELLED
    assert machine.read("sys/kernel/kexec_loaded") == "0\n"
    [load] = fake_kernel.loads
    assert (
        load.cmdline == f"root=/dev/vda rw console=ttyS0 {OURS} liveupd.transition={t.id}".encode()
    )
    unloads = [c for c in fake_kernel.calls if int(c.args[4]) & 1]
    assert len(unloads) == 1


def test_a_refused_load_fails_the_stage_and_unloads(
    config: Config, machine: Machine, fake_kernel: FakeKernel
) -> None:
    machine.write("sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
    fake_kernel.fail["load"] = 1  # EPERM under lockdown: the signature was refused
    engine = engine_for(config, machine)
    with pytest.raises(SignatureRejected, match="lockdown is integrity"):
        asyncio.run(engine.stage(StageRequest(kernel=TARGET)))
    # A refused kexec_file_load loads nothing, so there is nothing to unload.
    assert [int(c.args[4]) for c in fake_kernel.calls] == [0]
    assert machine.read("sys/kernel/kexec_loaded") == "0\n"


def test_the_jump_is_refused_in_a_host_test(
    config: Config, machine: Machine, fake_kernel: FakeKernel
) -> None:
    engine = engine_for(config, machine)

    async def go() -> Transition:
        t = await engine.stage(StageRequest(kernel=TARGET))
        await engine.start_execute(t, ExecMode.DIRECT)
        return t

    t = asyncio.run(go())
    assert t.state is TransitionState.FAILED
    assert t.error is not None and "LIVEUPD_HOST_TEST is set" in t.error.message
    assert not fake_kernel.rebooted
    assert machine.read("sys/kernel/kexec_loaded") == "0\n"  # rolled back: unloaded
