"""External data for ``bfdl evaluate`` (issue 15.4): every image with metadata, or a manifest's
rows; any bit depth / gray / RGB / RGBA / palette -> gray [0, 1] at the asked size; and the bad
inputs (unlisted image files, unknown columns, unreadable image, another task) as one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from data_helpers import one_error_line
from png_raw import write_png

from bfdl_tff.cli import main
from bfdl_tff.data import external, loader, synth
from bfdl_tff.data.labels import FINDINGS
from bfdl_tff.data.tasks import NIH_TASK, Task
from bfdl_tff.errors import DataError

_G = np.random.default_rng(0).integers(0, 256, (24, 24)).astype(np.uint8)
_PAL = np.repeat((np.arange(16) * 17)[:, None], 3, 1)
# name -> (pixels, bit depth, colour type, palette, expected gray in [0, 1])
CASES = {
    "gray8": (_G, 8, 0, None, _G / 255),
    "gray16": (_G.astype(np.uint16) * 257, 16, 0, None, _G / 255),
    "gray1": ((_G > 127).astype(np.uint8), 1, 0, None, (_G > 127).astype(float)),
    "gray4": (_G >> 4, 4, 0, None, (_G >> 4) / 15),
    "gray_alpha8": (np.stack([_G, np.full_like(_G, 90)], -1), 8, 4, None, _G / 255),
    "gray_alpha16": (np.stack([_G.astype(np.uint16) * 257, np.full(_G.shape, 9, np.uint16)], -1), 16, 4, None, _G / 255),
    "rgb8": (np.stack([_G] * 3, -1), 8, 2, None, _G / 255),
    "rgb16": (np.stack([_G.astype(np.uint16) * 257] * 3, -1), 16, 2, None, _G / 255),
    "rgba8": (np.concatenate([np.stack([_G] * 3, -1), np.full((24, 24, 1), 40, np.uint8)], -1), 8, 6, None, _G / 255),
    "rgba16": (np.concatenate([np.stack([_G.astype(np.uint16) * 257] * 3, -1), np.full((24, 24, 1), 65535, np.uint16)], -1),
               16, 6, None, _G / 255),
    "palette": (_G >> 4, 8, 3, _PAL, (_G >> 4) * 17 / 255),
}


def _entry(root: Path, names: list[str], labels: list[str]) -> Path:
    rows = [synth.DATA_ENTRY_HEADER_V2020] + [f"{n},{lab},0,{int(n.split('_')[0])},40,F,AP,24,24,0.1,0.1"
                                              for n, lab in zip(names, labels)]
    p = root / "Data_Entry_2017.csv"
    p.write_text("\n".join(rows) + "\n")
    return p


@pytest.fixture()
def zoo(tmp_path: Path) -> tuple[Path, list[str]]:
    """One image of every PNG flavour, NIH layout, v2020 Data_Entry."""
    root = tmp_path / "zoo"
    names = [f"{i + 1:08d}_000.png" for i in range(len(CASES))]
    for n, (px, bd, ct, pal, _) in zip(names, CASES.values()):
        write_png(root / "images" / n, px, bit_depth=bd, color_type=ct, palette=pal)
    labels = ["Hernia" if i % 3 == 0 else ("Edema|Mass" if i % 3 == 1 else "No Finding") for i in range(len(names))]
    _entry(root, names, labels)
    return root, names


def test_every_flavour_loads_as_gray(zoo):
    root, names = zoo
    e = external.load_external(root, image_size=24)
    assert e.images.images == names and e.task == NIH_TASK and e.images.x.dtype == np.float32
    for i, (k, case) in enumerate(CASES.items()):
        assert np.abs(e.images.x[i, ..., 0] - case[4]).max() < 1e-3, k
    rec = e.record()
    assert rec["images"] == len(CASES) and rec["patients"] == len(CASES) and rec["metadata_rows_without_image"] == 0
    assert rec["positives"]["Hernia"] == 4 and rec["positives"]["Edema"] == 4 and rec["positives"]["Atelectasis"] == 0
    small = external.load_external(root, image_size=8)
    assert small.images.x.shape == (len(CASES), 8, 8, 1)
    # resized images keep their mean (area averaging)
    assert abs(float(small.images.x[0].mean()) - float(CASES["gray8"][4].mean())) < 0.01
    assert external.load_external(root, image_size=48).images.x.shape == (len(CASES), 48, 48, 1)


def test_metadata_rows_without_images_are_skipped(zoo):
    root, names = zoo
    extra = names + ["00000099_000.png", "00000099_001.png"]
    _entry(root, extra, ["No Finding"] * len(extra))
    e = external.load_external(root, image_size=16)
    assert len(e.images) == len(names) and e.record()["metadata_rows_without_image"] == 2


def test_manifest_rows(zoo, tmp_path: Path):
    root, names = zoo
    meta = loader.read_metadata(root)
    m = meta.iloc[[1, 4, 7]][["image", "patient_id"]].assign(split="test")
    for f in FINDINGS:
        m[f] = meta.iloc[[1, 4, 7]][f].to_numpy()
    path = tmp_path / "external_list.csv"
    m.to_csv(path, index=False)
    e = external.load_external(root, image_size=24, manifest=path)
    assert e.images.images == [names[1], names[4], names[7]] and e.manifest == path
    assert e.positives()["Edema"] == 3
    # unknown columns: one line naming the file and the columns
    m.assign(site=1).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"external_list\.csv: not a manifest \(unknown columns \['site'\]\)"):
        external.load_external(root, image_size=24, manifest=path)
    # a row whose image the metadata does not list
    bad = m.copy()
    bad.loc[bad.index[0], "image"] = "00000777_000.png"
    bad.loc[bad.index[0], "patient_id"] = 777
    bad.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"external_list\.csv: 1 image\(s\) not in the dataset metadata .*00000777_000\.png"):
        external.load_external(root, image_size=24, manifest=path)
    with pytest.raises(DataError, match="is a directory"):
        external.load_external(root, image_size=24, manifest=tmp_path)


def test_unlisted_image_files_refused(zoo, capsys):
    root, names = zoo
    shutil.copy(root / "images" / names[0], root / "images" / "00000500_000.png")
    shutil.copy(root / "images" / names[0], root / "images" / "00000501_000.png")
    with pytest.raises(DataError, match=r"zoo: 2 image file\(s\) not in the metadata .*Data_Entry_2017\.csv, first: 00000500_000\.png, 00000501_000\.png"):
        external.load_external(root, image_size=24)
    capsys.readouterr()
    assert main(["data", "check", "--root", str(root)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "2 image file(s) not in the metadata" in line and "00000500_000.png" in line


def test_unreadable_image_and_unknown_metadata_columns(zoo, capsys):
    root, names = zoo
    bad = root / "images" / names[5]
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match=rf"{names[5]}: cannot decode PNG"):
        external.load_external(root, image_size=24)
    capsys.readouterr()
    assert main(["data", "check", "--root", str(root)]) == 2
    assert names[5] in one_error_line(capsys.readouterr().err)
    p = root / "Data_Entry_2017.csv"
    p.write_text(p.read_text().replace("View Position", "Scanner"))
    with pytest.raises(DataError, match=r"Data_Entry_2017\.csv: unknown Data_Entry layout \(unknown column\(s\) \['Scanner'\]\)"):
        external.load_external(root, image_size=24)
    assert main(["data", "check", "--root", str(root)]) == 2
    assert "unknown column(s) ['Scanner']" in one_error_line(capsys.readouterr().err)


def test_task_must_match(zoo):
    root, _ = zoo
    with pytest.raises(DataError, match=r"Data_Entry_2017\.csv: task multilabel over 14 labels .* differs from the model's binary \(pneumonia\)"):
        external.load_external(root, image_size=24, task=Task("binary", ("pneumonia",)))
    assert external.load_external(root, image_size=24, task=NIH_TASK).task == NIH_TASK


def test_task_layout_root(tmp_path: Path):
    """A MedMNIST export (task layout) is an external dataset too."""
    from bfdl_tff.data import medmnist

    rng = np.random.default_rng(3)
    data = {f"{s}_images": rng.integers(0, 256, (n, 10, 10), dtype=np.uint8) for s, n in (("train", 6), ("val", 2), ("test", 4))}
    data.update({f"{s}_labels": (np.arange(n) % 2)[:, None] for s, n in (("train", 6), ("val", 2), ("test", 4))})
    np.savez(tmp_path / "pneumoniamnist.npz", **data)
    medmnist.export_medmnist(tmp_path / "pneumoniamnist.npz", tmp_path / "exp")
    e = external.load_external(tmp_path / "exp", image_size=10)
    assert e.task == Task("binary", ("pneumonia",)) and len(e.images) == 12 and e.positives() == {"pneumonia": 6}
    assert np.allclose(e.images.x[-4:], medmnist.load_medmnist(tmp_path / "pneumoniamnist.npz", split="test").x, atol=1e-6)
    df = pd.read_csv(tmp_path / "exp" / "image_labels.csv")
    df.assign(extra=0).to_csv(tmp_path / "exp" / "image_labels.csv", index=False)
    with pytest.raises(DataError, match=r"image_labels\.csv: columns do not match .*task\.json \(unknown columns \['extra'\]"):
        external.load_external(tmp_path / "exp", image_size=10)
