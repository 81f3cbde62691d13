#!/usr/bin/python3
"""DICOM oracle for tests/test_dicom.cpp (run with Debian's /usr/bin/python3; never part of the product).

Writes into --out:
  * fixtures pydicom builds here: a CR MONOCHROME1 12-bit film with rescale slope/intercept and a VOI
    window, a 3-frame signed MONOCHROME2 image without window, and an RGB image;
  * for each fixture and each grey image among Debian's pydicom test files (uncompressed, big endian,
    deflated, RLE, JPEG 2000) and GDCM's XA JPEG-lossless example: the stored values of the first
    frame as pydicom decodes them (compressed files pydicom cannot decode here are first made raw with
    GDCM's own `gdcmconv --raw`), and the expected 8-bit image under the three VOI modes, computed here
    with numpy from the DICOM standard (PS3.3 C.11.2.1.2) and the authors' read_from_dicom;
  * cases.json listing them;
  * standalone JPEG files above 8 bits (what OpenCV's libjpeg-turbo cannot decode): the first
    frame's JPEG stream of a 12-bit JPEG-extended DICOM, of GDCM's 8-bit JPEG-lossless example and
    of a 16-bit fixture that GDCM's `gdcmconv --jpeg` compresses losslessly, each with the stored
    values pydicom reads from its DICOM (via gdcmconv --raw where needed) and, above 8 bits, their
    min-max to 8 bits as OpenCV computes it (v * s - lo * s, rounded half to even); jpegs.json
    lists them.
"""
import argparse
import json
import os
import shutil
import subprocess
import warnings

import numpy as np
import pydicom
import torch
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import generate_pixel_data_frame
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

warnings.filterwarnings("ignore")
PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
DEBIAN_FILES = [
    "CT_small.dcm",              # signed, rescale -1024
    "MR_small.dcm",              # window 600/1600
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",    # explicit VR big endian
    "MR_small_RLE.dcm",          # RLE lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "JPEG2000.dcm",
    "693_J2KI.dcm",              # JPEG 2000 lossy, window 40/100
    "image_dfl.dcm",             # deflated
    "rtdose.dcm",                # 15 frames, uint32
    "JPEG-lossy.dcm",            # JPEG extended 12-bit: via gdcmconv --raw
]
GDCM_EXAMPLE = "/usr/share/doc/libgdcm3.0/examples/00191113.dcm"  # XA, JPEG lossless, 4 frames


def new_dataset(path, rows, cols, photometric, bits_stored, signed, frames=1, spp=1):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if spp == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    return ds


def write_fixtures(out):
    rng = np.random.default_rng(20261123)
    made = []
    # CR film, MONOCHROME1 (dense = dark in stored values), 12 bits in 16, rescale and window.
    p = os.path.join(out, "cr_monochrome1.dcm")
    ds = new_dataset(p, 40, 30, "MONOCHROME1", 12, False)
    yy, xx = np.mgrid[0:40, 0:30]
    px = (4095 * (0.2 + 0.6 * xx / 29.0) + rng.integers(0, 50, (40, 30))).clip(0, 4095).astype(np.uint16)
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-100"
    ds.WindowCenter, ds.WindowWidth = ["3000", "2000"], ["4000", "1000"]
    ds.PixelData = px.tobytes()
    ds.save_as(p, write_like_original=False)
    made.append(p)
    # Three frames of signed values, MONOCHROME2, no window: the first frame is read.
    p = os.path.join(out, "multiframe_signed.dcm")
    ds = new_dataset(p, 16, 20, "MONOCHROME2", 16, True, frames=3)
    px = rng.integers(-2000, 3000, (3, 16, 20)).astype(np.int16)
    ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
    ds.PixelData = px.tobytes()
    ds.save_as(p, write_like_original=False)
    made.append(p)
    # RGB: converted to grey with OpenCV's weights.
    p = os.path.join(out, "rgb.dcm")
    ds = new_dataset(p, 12, 10, "RGB", 8, False, spp=3)
    px = rng.integers(0, 256, (12, 10, 3)).astype(np.uint8)
    ds.PixelData = px.tobytes()
    ds.save_as(p, write_like_original=False)
    made.append(p)
    return made


def write_u16_fixture(out):
    """A 16-bit unsigned grey image, 48x40, spanning most of 0..65535."""
    p = os.path.join(out, "u16_raw.dcm")
    ds = new_dataset(p, 40, 48, "MONOCHROME2", 16, False)
    rng = np.random.default_rng(20261206)
    yy, xx = np.mgrid[0:40, 0:48]
    px = (60000 * xx / 47.0 + 2000 * yy / 39.0 + rng.integers(0, 3000, (40, 48))).clip(0, 65535).astype(np.uint16)
    ds.PixelData = px.tobytes()
    ds.save_as(p, write_like_original=False)
    return p


def minmax_like_opencv(v):
    lo, hi = v.min(), v.max()
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.rint(v * scale + (-lo * scale)).clip(0, 255).astype(np.uint8)


def write_jpegs(out, tensors):
    """Standalone JPEG files above 8 bits, with the values their DICOMs decode to."""
    u16 = write_u16_fixture(out)
    u16_jpeg = os.path.join(out, "u16_jpeg_lossless.dcm")
    subprocess.run(["gdcmconv", "--jpeg", u16, u16_jpeg], check=True)
    sources = [("jpeg_extended12", os.path.join(PYDICOM_FILES, "JPEG-lossy.dcm"), "JPEG-lossy.dcm"),
               ("jpeg_lossless8", GDCM_EXAMPLE, GDCM_EXAMPLE),
               ("jpeg_lossless16", u16_jpeg, u16)]
    listed = []
    for name, compressed, values in sources:
        if not os.path.exists(compressed):
            continue
        ds = pydicom.dcmread(compressed)
        frame = next(generate_pixel_data_frame(ds.PixelData, int(ds.get("NumberOfFrames", 1) or 1)))
        jpg = os.path.join(out, name + ".jpg")
        with open(jpg, "wb") as fh:
            fh.write(frame)
        ref = pydicom.dcmread(values if os.path.isabs(values) else os.path.join(PYDICOM_FILES, values))
        try:
            stored = first_frame(ref)
        except Exception:
            raw = os.path.join(out, name + "_raw.dcm")
            subprocess.run(["gdcmconv", "--raw", compressed, raw], check=True)
            stored = first_frame(pydicom.dcmread(raw))
        # 8-bit samples keep their values (as any 8-bit file); deeper ones are stretched min-max.
        gray8 = stored.astype(np.uint8) if int(ref.BitsStored) == 8 else minmax_like_opencv(stored)
        tensors[name + ".gray8"] = torch.from_numpy(gray8.copy())
        listed.append({"key": name, "file": jpg, "bits": int(ref.BitsStored),
                       "transfer_syntax": str(ds.file_meta.TransferSyntaxUID.name)})
    return listed


def first_frame(ds):
    a = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1))
    if frames > 1:
        a = a[0]
    a = a.astype(np.float64)
    if spp == 3:
        a = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
    return a


def first_value(v):
    if v is None:
        return None
    if isinstance(v, (list, tuple, pydicom.multival.MultiValue)):
        v = v[0]
    return float(v)


def expected(stored, ds, mode):
    mono1 = ds.PhotometricInterpretation == "MONOCHROME1"
    if mode == "authors":
        y = np.rint(np.abs(stored * (255.0 / stored.max()))).clip(0, 255)
    else:
        slope = first_value(ds.get("RescaleSlope")) or 1.0
        intercept = first_value(ds.get("RescaleIntercept")) or 0.0
        v = stored * slope + intercept
        c, w = first_value(ds.get("WindowCenter")), first_value(ds.get("WindowWidth"))
        if mode == "auto" and c is not None and w is not None and w > 0:
            if w <= 1:
                y = np.where(v <= c - 0.5, 0.0, 255.0)
            else:
                y = ((v - (c - 0.5)) / (w - 1) + 0.5) * 255.0
                y = np.where(v <= c - 0.5 - (w - 1) / 2, 0.0, y)
                y = np.where(v > c - 0.5 + (w - 1) / 2, 255.0, y)
        else:
            lo, hi = v.min(), v.max()
            y = (v - lo) * 255.0 / (hi - lo) if hi > lo else np.zeros_like(v)
        y = np.floor(y.clip(0, 255) + 0.5)
    y = y.astype(np.uint8)
    return (255 - y) if mono1 else y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    files = write_fixtures(args.out)
    files += [os.path.join(PYDICOM_FILES, f) for f in DEBIAN_FILES if os.path.exists(os.path.join(PYDICOM_FILES, f))]
    if os.path.exists(GDCM_EXAMPLE):
        files.append(GDCM_EXAMPLE)
    tensors, cases = {}, []
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        source = "pydicom"
        try:
            stored = first_frame(ds)
        except Exception:
            raw = os.path.join(args.out, "raw_%d.dcm" % i)
            subprocess.run(["gdcmconv", "--raw", f, raw], check=True)
            ds = pydicom.dcmread(raw)
            stored = first_frame(ds)
            source = "gdcmconv --raw + pydicom"
        key = "case%d" % i
        tensors[key + ".stored"] = torch.from_numpy(stored.copy())
        for mode in ("auto", "minmax", "authors"):
            tensors[key + "." + mode] = torch.from_numpy(expected(stored, ds, mode).copy())
        cases.append({"key": key, "file": f, "source": source, "photometric": str(ds.PhotometricInterpretation),
                      "frames": int(ds.get("NumberOfFrames", 1) or 1),
                      "transfer_syntax": str(pydicom.dcmread(f).file_meta.TransferSyntaxUID.name)})
    jpegs = write_jpegs(args.out, tensors)
    torch.save(tensors, os.path.join(args.out, "dicom_reference.pt"))
    with open(os.path.join(args.out, "cases.json"), "w") as fh:
        json.dump(cases, fh, indent=1)
    with open(os.path.join(args.out, "jpegs.json"), "w") as fh:
        json.dump(jpegs, fh, indent=1)
    print("dicom reference: %d files, %d standalone JPEGs -> %s" % (len(cases), len(jpegs), args.out))


if __name__ == "__main__":
    main()
