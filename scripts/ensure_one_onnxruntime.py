"""Keep exactly one ONNX Runtime wheel: with onnxruntime and onnxruntime-gpu side by side,
`import onnxruntime` may load the CPU build and silently run everything on the CPU.

Usage: ensure_one_onnxruntime.py --before|--after cpu|gpu LOCK_FILE
"""
import importlib.metadata
import re
import subprocess
import sys
import tempfile

WHEEL = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}


def installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def locked_requirement(lock: str, name: str) -> str:
    """The lock's entry for `name`: its pin, markers and hashes, as one requirements-file entry."""
    entries = re.split(r"\n(?=\S)", open(lock).read())
    for entry in entries:
        if re.match(rf"{re.escape(name)}==", entry):
            lines = [line for line in entry.splitlines() if line.strip() and not line.strip().startswith("#")]
            return "\n".join(lines).rstrip(" \\")
    raise SystemExit(f"{lock} does not pin {name}; run make lock")


def main() -> int:
    stage, extra, lock = sys.argv[1], sys.argv[2], sys.argv[3]
    if extra not in WHEEL:
        print(f"EXTRA={extra}: use cpu or gpu", file=sys.stderr)
        return 2
    wanted = WHEEL[extra]
    other = WHEEL["gpu" if extra == "cpu" else "cpu"]
    if installed(other):
        pip("uninstall", "-y", other)
        if stage == "--after":  # the two wheels share files: reinstall the one we keep, as locked
            with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirement:
                requirement.write(locked_requirement(lock, wanted) + "\n")
                requirement.flush()
                pip("install", "--force-reinstall", "--no-deps", "--require-hashes", "-r", requirement.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
