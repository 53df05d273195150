"""What a benchmark ran on: host, OS, CPU, board model, attached accelerators, power mode.

Standard library only and Python 3.6 compatible (JetPack 4.6). Every probe is
best effort: a file or tool that is missing leaves its field null, because a
description must never stop a benchmark.
"""

import glob
import os
import platform
import re
import socket
import subprocess

# USB ids (vendor:product) of the accelerators the runner looks for.
EDGETPU_USB_IDS = ("1a6e:089a", "18d1:9302")  # before and after its firmware is loaded
NCS2_USB_IDS = ("03e7:2485", "03e7:f63b")  # Myriad X before and after booting
EDGETPU_PCIE_DEVICE = "/dev/apex_0"  # M.2 / PCIe Edge TPU and the Coral Dev Board's SoM


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    # x86 names the CPU in "model name"; ARM boards in "Model" or "Hardware".
    for key in ("model name", "Model", "Hardware"):
        for line in lines:
            if line.startswith(key) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _read_text(path):
    try:
        with open(path) as f:
            return f.read().strip("\x00\n ") or None
    except OSError:
        return None


def board_model():
    """The board name from the device tree (Jetsons, Coral Dev Board Mini, Raspberry Pi)."""
    return _read_text("/proc/device-tree/model")


def usb_ids():
    """'vvvv:pppp' of every attached USB device, from sysfs, else from lsusb."""
    ids = set()
    for dev in glob.glob("/sys/bus/usb/devices/*"):
        vendor = _read_text(os.path.join(dev, "idVendor"))
        product = _read_text(os.path.join(dev, "idProduct"))
        if vendor and product:
            ids.add("{}:{}".format(vendor.lower(), product.lower()))
    if not ids:
        out = _run(["lsusb"])
        ids.update(m.lower() for m in re.findall(r"ID ([0-9a-fA-F]{4}:[0-9a-fA-F]{4})", out or ""))
    return ids


def edgetpu_present(ids=None):
    ids = usb_ids() if ids is None else ids
    return os.path.exists(EDGETPU_PCIE_DEVICE) or any(i in ids for i in EDGETPU_USB_IDS)


def ncs2_present(ids=None):
    ids = usb_ids() if ids is None else ids
    return any(i in ids for i in NCS2_USB_IDS)


def jetson_power_mode():
    """The nvpmodel mode name (for example 'MAXN' or '5W'), or None off a Jetson."""
    out = _run(["nvpmodel", "-q"])
    match = re.search(r"NV Power Mode:\s*(\S+)", out or "")
    return match.group(1) if match else None


def memory_bytes():
    text = _read_text("/proc/meminfo") or ""
    match = re.search(r"MemTotal:\s+(\d+) kB", text)
    return int(match.group(1)) * 1024 if match else None


def describe():
    """The device fields of a result file."""
    ids = usb_ids()
    return {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "board": board_model(),
        "l4t_release": _read_text("/etc/nv_tegra_release"),
        "mendel_version": _read_text("/etc/mendel_version"),
        "edgetpu_present": edgetpu_present(ids),
        "ncs2_present": ncs2_present(ids),
        "power_mode": jetson_power_mode(),
    }


def default_label(description, backend, accelerator=None):
    """A folder name for results/: the accelerator, else the board, else the CPU model."""
    if accelerator == "MYRIAD":
        return "ncs2"
    if backend == "edgetpu" and "coral" not in (description.get("board") or "").lower():
        return "edgetpu-usb"
    return slug(description.get("board") or description.get("cpu") or description["host"])


def slug(text):
    text = re.sub(r"\((r|tm|c)\)", "", text.lower())
    return re.sub(r"[^a-z0-9.]+", "-", text).strip("-")[:60] or "device"


def _run(argv):
    try:
        proc = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            universal_newlines=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None
