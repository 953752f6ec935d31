"""Keep exactly one ONNX Runtime wheel: with onnxruntime and onnxruntime-gpu side by side,
`import onnxruntime` may load the CPU build and silently run everything on the CPU."""
import importlib.metadata
import subprocess
import sys

WHEEL = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}
VERSIONS = ">=1.20,<2"  # the range pyproject.toml pins for both wheels


def installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def main() -> int:
    stage, extra = sys.argv[1], sys.argv[2]
    if extra not in WHEEL:
        print(f"EXTRA={extra}: use cpu or gpu", file=sys.stderr)
        return 2
    wanted = WHEEL[extra]
    other = WHEEL["gpu" if extra == "cpu" else "cpu"]
    if installed(other):
        pip("uninstall", "-y", other)
        if stage == "--after":  # the two wheels share files: reinstall the one we keep
            pip("install", "--force-reinstall", "--no-deps", f"{wanted}{VERSIONS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
