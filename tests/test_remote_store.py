"""Results on S3: a local S3-compatible server (moto, on 127.0.0.1 only) behind pyarrow's
real S3 filesystem, so `run --out s3://...`, show, compare and the store's listing, atomic
write and checksum take the same code path as on a real bucket."""
from __future__ import annotations

import pytest

from bench import store
from bench.cli import main
from tests.test_harness import QUICK, facebench

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the test extra (make test installs it)")
boto3 = pytest.importorskip("boto3")

BUCKET = "facebench-results"
# Test credentials only, no profile or config of the developer's, and no proxy between us and 127.0.0.1.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null",
               "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "NO_PROXY": "127.0.0.1,localhost",
               "no_proxy": "127.0.0.1,localhost"}
UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")


@pytest.fixture(scope="module")
def s3():
    """(uri_for(key), endpoint) of a fresh bucket on a local S3 server; stopped after the module."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        for name in UNSET:
            patch.delenv(name, raising=False)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"{host}:{port}"
            boto3.client("s3", endpoint_url=f"http://{endpoint}").create_bucket(Bucket=BUCKET)

            def uri_for(key: str) -> str:
                return f"s3://{BUCKET}/{key}?endpoint_override={endpoint}&scheme=http"

            yield uri_for
        finally:
            server.stop()


def test_rows_round_trip_through_s3_with_checksum(s3, measured_rows):
    uri = s3("store/one.parquet")
    store.write_rows(uri, measured_rows)
    back = store.read_rows(uri)
    assert [r["fps"] for r in back] == [r["fps"] for r in measured_rows]
    assert store.read_table(uri)[1].checksum_ok is True  # verified on the remote copy
    store.write_rows(s3("store/deeper/two.parquet"), measured_rows[:1])
    found = store.find_result_files([s3("store/")])
    assert sorted(store.location_name(f) for f in found) == ["one.parquet", "two.parquet"]
    assert all(f.startswith(f"s3://{BUCKET}/store/") and "endpoint_override=" in f for f in found)


def test_run_out_s3_then_show_and_compare(s3, tmp_path, capsys):
    folder = s3("runs/")
    result = facebench("run", QUICK, "--models", "arcface_mbf", "--runtimes", "ort-cpu", "--batches", "1",
                       "--out", folder, "--inline", timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "copied to s3://" in result.stdout
    [local] = (tmp_path / "results").glob("*-quick.parquet")  # measured locally first, then copied
    [remote] = store.find_result_files([folder])
    assert store.location_name(remote) == local.name
    assert store.read_rows(remote) == store.read_rows(local)
    assert main(["show", remote]) == 0
    assert "arcface_mbf: steady state" in capsys.readouterr().out
    assert main(["compare", str(local), remote]) == 0
    assert "arcface_mbf" in capsys.readouterr().out


def test_pipeline_out_s3_uploads_like_run(s3, tmp_path):
    folder = s3("pipelines/")
    result = facebench("pipeline", "--synthetic", "4", "--det", "scrfd_500m@320", "--rec", "arcface_mbf",
                       "--runtime", "ort-cpu", "--repeats", "1", "--out", folder, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "copied to s3://" in result.stdout
    [local] = (tmp_path / "results").glob("*-pipeline.parquet")  # measured locally first, then copied
    [remote] = store.find_result_files([folder])
    assert store.location_name(remote) == local.name
    [row] = store.read_rows(remote)
    assert (row["kind"], row["status"]) == ("pipeline", "ok") and store.read_rows(local) == [row]


def test_missing_bucket_is_one_line_exit_2(s3, tmp_path):
    missing = s3("runs/").replace(f"s3://{BUCKET}/", "s3://no-such-bucket/")
    result = facebench("show", missing, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def measured_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("s3-source")
    assert main(["run", QUICK, "--models", "arcface_mbf", "--runtimes", "ort-cpu", "--batches", "1,2",
                 "--out", str(out / "source.parquet"), "--inline"]) == 0
    return store.read_rows(out / "source.parquet")
