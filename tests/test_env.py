"""The machine fingerprint: CPU identity and ISA features, the lock record, and their columns."""
from __future__ import annotations

import hashlib
import sys

import pytest

from bench import env, store
from bench.report import compare

# /proc/cpuinfo first blocks of the two kinds of machine this project has met: the same
# "AMD EPYC, 2 cores" name, 2.5x apart in FP32 speed, and only one with AVX-512 / VNNI.
EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC 7B12
stepping\t: 0
cpu MHz\t\t: 2249.998
flags\t\t: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c hypervisor avx2 sha_ni

processor\t: 1
vendor_id\t: AuthenticAMD
"""
EPYC_AVX512 = EPYC_AVX2.replace("cpu family\t: 23", "cpu family\t: 25").replace(
    "avx2 sha_ni", "avx2 sha_ni avx512f avx512bw avx512_vnni avx512_bf16")
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp sve i8mm bf16
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""


def test_isa_features_tell_two_epyc_vms_apart():
    avx2, avx512 = env.parse_cpuinfo(EPYC_AVX2), env.parse_cpuinfo(EPYC_AVX512)
    assert env.cpu_features(avx2) == ("avx2", "fma", "f16c")
    assert env.cpu_features(avx512) == ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16")
    identity = env.cpu_identity(avx2)
    assert identity["cpu_vendor"] == "AuthenticAMD" and identity["cpu_isa"] == "avx2 fma f16c"
    assert (identity["cpu_family"], identity["cpu_model_number"], identity["cpu_stepping"]) == (23, 49, 0)
    assert identity["cpu_virtualized"] is True
    assert env.cpu_identity(avx512)["cpu_family"] == 25


def test_arm_features_and_identity():
    info = env.parse_cpuinfo(GRAVITON)
    assert env.cpu_features(info) == ("asimd", "asimddp", "sve", "i8mm", "bf16")
    identity = env.cpu_identity(info)
    assert identity["cpu_vendor"] == "0x41" and identity["cpu_model_number"] == 0xd40
    assert identity["cpu_stepping"] == 1


def test_this_machines_fingerprint_fits_the_schema_and_round_trips(tmp_path):
    machine = env.fingerprint()
    assert set(machine) <= set(store.COLUMNS)
    assert machine["cpu_isa"] == " ".join(env.cpu_features())
    assert isinstance(machine["cpu_virtualized"], bool) and machine["cpu_sockets"] >= 1
    path = tmp_path / "fp.parquet"
    store.write_rows(path, [{**machine, "model": "m", "runtime": "ort-cpu", "batch": 1, "status": "ok"}])
    row = store.read_rows(path)[0]
    assert {k: row[k] for k in machine} == machine


def test_lock_record_names_the_lock_the_venv_came_from(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert env.lock_record() == (None, None)  # installed some other way: nulls, not a guess
    digest = hashlib.sha256(b"lock").hexdigest()
    (tmp_path / env.LOCK_RECORD).write_text(f"locks/cpu-test.txt {digest}\n")
    assert env.lock_record() == ("locks/cpu-test.txt", digest)


def test_make_records_the_lock_it_installed():
    name, digest = env.lock_record()
    if name is None:
        pytest.skip("this environment was not installed by make")
    assert digest == hashlib.sha256(open(name, "rb").read()).hexdigest(), f"{name} changed since install: make test"


def test_compare_names_isa_differences_and_labels_the_machines(tmp_path):
    base = {"model": "m", "model_sha256": "ab", "runtime": "ort-cpu", "precision": "fp32", "batch": 1,
            "kind": "sweep", "status": "ok", "fps": 100.0, "host": "vm", "cpu_model": "AMD EPYC 7B12",
            "cpu_cores": 2, "timestamp_utc": "2026-12-01T00:00:00Z"}
    paths = []
    for name, text in (("avx2", EPYC_AVX2), ("avx512", EPYC_AVX512)):
        identity = env.cpu_identity(env.parse_cpuinfo(text))
        row = {**base, **identity, "run_id": name, "machine_id": name * 2}
        paths.append(str(tmp_path / f"{name}.parquet"))
        store.write_rows(paths[-1], [row])
    results = compare.load_results(paths)
    assert set(results.frame.machine_label) == {"vm AMD EPYC 7B12 2c avx2", "vm AMD EPYC 7B12 2c avx512-vnni"}
    comparison = compare.build_comparison(results, "fps", None, None)
    differences = {d.name: set(d.values.values()) for d in comparison.differences}
    assert differences["CPU ISA"] == {"avx2 fma f16c", "avx2 fma f16c avx512f avx512_vnni avx512_bf16"}
    assert differences["CPU family"] == {"23", "25"}
    assert "CPU vendor" not in differences  # only what differs
