#!/usr/bin/env python3
"""Makes a CPU libtorch directory for tch from PyPI wheels (pip is used as a downloader only).

Usage: scripts/libtorch.py DEST

DEST gets include/, lib/ (libtorch_cpu.so, libc10.so, libgomp, the two CUDA runtime libraries
libtorch_cpu.so needs to load, and an empty libtorch.so so that nothing pulls in CUDA) and
build-version. Nothing is installed into Python.
"""
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

TORCH = "2.13.0"
WHEELS = [f"torch=={TORCH}", "nvidia-cuda-runtime==13.5.37", "nvidia-cuda-cupti==13.5.25"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_25_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64"]


def main() -> int:
    dest = pathlib.Path(sys.argv[1])
    version = dest / "build-version"
    if version.exists() and version.read_text().strip() == TORCH:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-cache-dir", "--no-deps",
               "--only-binary=:all:", "--python-version", "3.11", "-d", tmp]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        subprocess.run(cmd + WHEELS, check=True)
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "lib").mkdir(parents=True)
        for wheel in pathlib.Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    if member.endswith("/"):
                        continue
                    name = pathlib.PurePosixPath(member)
                    if member.startswith("torch/include/"):
                        target = staging / "include" / name.relative_to("torch/include")
                    elif name.name in ("libtorch_cpu.so", "libc10.so") and member.startswith("torch/lib/"):
                        target = staging / "lib" / name.name
                    elif member.startswith("torch/lib/libgomp") or name.name in (
                            "libcudart.so.13", "libcupti.so.13"):
                        target = staging / "lib" / name.name
                    else:
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
        # torch-sys always links -ltorch; PyPI's libtorch.so needs libtorch_cuda.so and several
        # GB of CUDA. An empty library satisfies the link and pulls nothing in.
        subprocess.run(["cc", "-shared", "-fPIC", "-x", "c", "-", "-o",
                        str(staging / "lib" / "libtorch.so")], input=b"", check=True)
        (staging / "build-version").write_text(TORCH + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
