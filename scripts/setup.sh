#!/usr/bin/env bash
# Installs every Debian package that afloc's build, tests, benchmarks and demo need.
# A no-op (no apt call) when they are all present. Run as root (or with sudo available).
set -euo pipefail

PKGS=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git
  # LibTorch (CPU) + the fast BLAS it needs for BERT's matmuls + Gloo for c10d
  libtorch-dev libopenblas0-pthread libopenblas-pthread-dev libgloo-dev
  # Unicode (character classes, case mapping, NFD) for the BERT tokenizer and text cleaning
  libicu-dev
  # images: OpenCV (INTER_AREA resize bit-exact with the authors' cv2 pipeline, PNG/JPEG codecs),
  # GDCM for DICOM
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev libgdcm-dev libgdcm-tools
  # CSV (MIMIC metadata, MS-CXR, RSNA, SIIM), JSON, CLI, HTTP
  libcsv-dev
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libssl-dev zlib1g-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  # Python oracles (golden generators and reference runs only; the product is C++)
  python3-torch python3-torchvision python3-numpy python3-scipy python3-sklearn python3-pydicom
  python3-pil
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages present"
  exit 0
fi

echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
