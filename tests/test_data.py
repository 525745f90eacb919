"""Datasets as Parquet: importers on small fixtures in the official layouts, the file format, the CLI."""

import json
import re
import shutil
import signal
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from distmeta.cli import main
from distmeta.data import (DataError, dataset_info, import_folder, import_miniimagenet, import_omniglot, load_dataset,
                           write_dataset)
from distmeta.data.importers import SPLITS
from distmeta.data.parquet import METADATA_KEY

REAL_OMNIGLOT = Path(__file__).resolve().parents[2] / "shared/data/omniglot/images_background.zip"
ALPHABETS = ["Beta_(Test)", "Alpha"]  # made in this order; imported sorted
DRAWINGS = 4


def drawing(path: Path, rng) -> None:
    """A 105x105 1-bit PNG like Omniglot's: white background, a few black strokes."""
    image = Image.new("1", (105, 105), 1)
    for _ in range(3):
        ImageDraw.Draw(image).line([tuple(p) for p in rng.integers(5, 100, (4, 2)).tolist()], fill=0, width=3)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def photo(path: Path, rng, size=(12, 10), mode="RGB", fmt=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path, fmt)


def omniglot_folder(root: Path, alphabets, characters=3, drawings=DRAWINGS, seed=0) -> Path:
    """``root/<Alphabet>/characterNN/<id>_<drawer>.png``, the unpacked official zip."""
    rng = np.random.default_rng(seed)
    for a, alphabet in enumerate(alphabets):
        for c in range(characters, 0, -1):
            for d in range(drawings, 0, -1):
                drawing(root / alphabet / f"character{c:02d}" / f"{100 * a + c:04d}_{d:02d}.png", rng)
    return root


def zip_folder(folder: Path, archive: Path, damaged: str | None = None) -> Path:
    """Zip ``folder`` as the official archives are (members under its name), plus the folder
    entries and macOS junk some zips carry; the member ``damaged`` is cut in half."""
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"{folder.name}/", "")
        zf.writestr(f"__MACOSX/{folder.name}/._junk.png", b"not a png")
        for file in sorted(folder.rglob("*.png"), reverse=True):
            member = file.relative_to(folder.parent).as_posix()
            data = file.read_bytes()
            zf.writestr(member, data[: len(data) // 2] if member == damaged else data)
    return archive


def mini_layout(root: Path, seed=0) -> Path:
    """Ravi & Larochelle's layout: {train,val,test}.csv (filename,label) and images/."""
    rng = np.random.default_rng(seed)
    splits = {"train": ["n02110063", "n01532829"], "val": ["n03075370", "n02971356"],
              "test": ["n04522168", "n02219486"]}
    for split, wnids in splits.items():
        rows = ["filename,label"]
        for i in range(1, 3):  # the classes' rows interleave, as in the real files
            for wnid in wnids:
                rows.append(f"{wnid}{i:08d}.jpg,{wnid}")
                photo(root / "images" / f"{wnid}{i:08d}.jpg", rng, size=(14, 9))
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """Every source layout, made once."""
    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(1)
    omniglot = omniglot_folder(root / "unpacked" / "images_background", ALPHABETS)
    evaluation = omniglot_folder(root / "unpacked" / "images_evaluation", ["Aaa"], characters=1, drawings=2, seed=2)
    grouped, flat = root / "grouped", root / "flat"
    for name, count, ext in [("zeta/b_cls", 2, "png"), ("zeta/a_cls", 3, "jpg"), ("alpha/only", 2, "JPG")]:
        for i in range(count):
            photo(grouped / name / f"img{i}.{ext}", rng, size=(20 + i, 16), fmt="JPEG" if ext != "png" else None)
    photo(grouped / ".hidden" / "cls" / "x.png", rng)  # hidden: skipped
    (grouped / "zeta" / "notes.txt").write_text("not an image")
    for name, files in [("dog", ["a.png", "b.gif"]), ("cat", ["c.webp", "d.bmp", "e.jpeg"])]:
        for file in files:
            photo(flat / name / file, rng, size=(30, 24), mode="RGBA" if file.endswith("png") else "RGB")
    return SimpleNamespace(
        omniglot=omniglot, zip=zip_folder(omniglot, root / "images_background.zip"),
        evaluation_zip=zip_folder(evaluation, root / "images_evaluation.zip"),
        grouped=grouped, flat=flat, mini=mini_layout(root / "mini"))


@pytest.fixture(scope="module")
def omniglot(src, tmp_path_factory):
    """The fixture zip imported (28x28), and the file it made."""
    path = tmp_path_factory.mktemp("imported") / "omniglot.parquet"
    summary = import_omniglot([src.zip], path, progress=False)
    return SimpleNamespace(path=path, summary=summary, data=load_dataset(path))


def lanczos(file: Path, size: int, mode: str) -> np.ndarray:
    """What a stored image must be: Pillow's Lanczos resize of the source, as (C, H, W)."""
    pixels = np.asarray(Image.open(file).convert(mode).resize((size, size), Image.LANCZOS))
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def drawers(path) -> list:
    return pq.read_table(path, columns=["drawer"])["drawer"].to_pylist()


def cli(capsys, *args) -> tuple[int, str, str]:
    """``distmeta ARGS`` in this process: (exit code, stdout, stderr)."""
    previous = signal.getsignal(signal.SIGTERM)  # main() installs its own handler
    try:
        code = main([str(a) for a in args])
    finally:
        signal.signal(signal.SIGTERM, previous)
    out, err = capsys.readouterr()
    return code, out, err


# Omniglot


def test_omniglot_zip_and_unpacked_folder_give_the_same_dataset(src, omniglot, tmp_path):
    from_folder = load_dataset(import_omniglot([src.omniglot], tmp_path / "o.parquet", progress=False)["output"])
    for field in ("images", "labels", "class_names", "class_groups", "name"):
        assert np.array_equal(getattr(from_folder, field), getattr(omniglot.data, field)), field
    assert drawers(tmp_path / "o.parquet") == drawers(omniglot.path)


def test_omniglot_rows_names_groups_drawers_and_metadata(src, omniglot):
    data = omniglot.data
    assert data.class_names == tuple(f"{a}/character{c:02d}" for a in sorted(ALPHABETS) for c in (1, 2, 3))
    assert data.class_groups == ("Alpha",) * 3 + ("Beta_(Test)",) * 3
    assert np.array_equal(data.labels, np.repeat(np.arange(6), DRAWINGS)) and data.labels.dtype == np.int64
    assert data.image_shape == (1, 28, 28) and data.images.dtype == np.uint8
    assert data.name == "omniglot" and data.path == str(omniglot.path)
    table = pq.read_table(omniglot.path)
    assert table.column_names == ["label", "class_name", "group", "drawer", "image"]
    assert table.schema.field("image").type == pa.binary(28 * 28) and table.schema.field("label").type == pa.int32()
    assert drawers(omniglot.path) == ["01", "02", "03", "04"] * 6
    assert json.loads(table.schema.metadata[METADATA_KEY]) == {
        "format": 1, "name": "omniglot", "image_shape": [1, 28, 28], "classes": 6, "groups": 2, "images": 24,
        "source": [str(src.zip)]}
    assert {k: v for k, v in omniglot.summary.items() if k != "seconds"} == {
        "output": str(omniglot.path), "images": 24, "classes": 6, "groups": 2, "image_shape": [1, 28, 28],
        "bytes": omniglot.path.stat().st_size}


def test_omniglot_pixels_are_lanczos_of_the_source_not_inverted(src, omniglot):
    row = 1 * DRAWINGS + 2  # Alpha/character02, drawer 03
    source = src.omniglot / "Alpha" / "character02" / "0102_03.png"
    assert np.array_equal(omniglot.data.images[row], lanczos(source, 28, "L"))
    assert np.median(omniglot.data.images) == 255  # white background, as in the source


def test_omniglot_paths_are_imported_in_argument_order(src, tmp_path):
    both = load_dataset(import_omniglot([src.zip, src.evaluation_zip], tmp_path / "a.pq", progress=False)["output"])
    assert both.groups == ["Alpha", "Beta_(Test)", "Aaa"] and both.class_names[-1] == "Aaa/character01"
    reverse = load_dataset(import_omniglot([src.evaluation_zip, src.zip], tmp_path / "b.pq", progress=False)["output"])
    assert reverse.groups == ["Aaa", "Alpha", "Beta_(Test)"]
    assert np.array_equal(reverse.images[2:], both.images[:-2])


def test_progress_bar_on_stderr_unless_disabled(src, tmp_path, capsys):
    import_omniglot(src.zip, tmp_path / "a.parquet")  # one path needs no list
    assert "decoding omniglot" in capsys.readouterr().err
    import_omniglot(src.zip, tmp_path / "b.parquet", progress=False)
    assert capsys.readouterr() == ("", "")


# Image folders and mini-ImageNet


def test_folder_grouped_layout_is_detected_and_sorted(src, tmp_path):
    summary = import_folder(src.grouped, tmp_path / "g.parquet", size=16, progress=False)
    data = load_dataset(summary["output"])
    assert data.class_names == ("alpha/only", "zeta/a_cls", "zeta/b_cls")
    assert data.class_groups == ("alpha", "zeta", "zeta") and summary["groups"] == 2
    assert data.class_counts.tolist() == [2, 3, 2] and data.image_shape == (3, 16, 16)
    assert np.array_equal(data.images[3], lanczos(src.grouped / "zeta" / "a_cls" / "img1.jpg", 16, "RGB"))
    assert data.name == "grouped"


def test_folder_ungrouped_any_format_greyscale_or_rgb(src, tmp_path):
    rgb = load_dataset(import_folder(src.flat, tmp_path / "rgb.parquet", size=8, progress=False)["output"])
    assert rgb.class_names == ("cat", "dog") and rgb.class_groups == ("", "") and rgb.image_shape == (3, 8, 8)
    assert rgb.class_counts.tolist() == [3, 2]
    assert np.array_equal(rgb.images[3], lanczos(src.flat / "dog" / "a.png", 8, "RGB"))  # RGBA: alpha dropped
    grey = load_dataset(import_folder(src.flat, tmp_path / "l.parquet", size=8, channels=1, progress=False)["output"])
    assert grey.image_shape == (1, 8, 8)
    assert np.array_equal(grey.images[0], lanczos(src.flat / "cat" / "c.webp", 8, "L"))
    assert dataset_info(tmp_path / "l.parquet")["groups"] == 0


def test_miniimagenet_classes_run_train_val_test_in_csv_order(src, tmp_path):
    summary = import_miniimagenet(src.mini, tmp_path / "mini.parquet", progress=False)
    data = load_dataset(summary["output"])
    assert data.class_names == ("n02110063", "n01532829", "n03075370", "n02971356", "n04522168", "n02219486")
    assert data.class_groups == ("train", "train", "val", "val", "test", "test") and data.groups == list(SPLITS)
    assert data.image_shape == (3, 84, 84) and data.class_counts.tolist() == [2] * 6 and data.name == "miniimagenet"
    assert np.array_equal(data.images[1], lanczos(src.mini / "images" / "n0211006300000002.jpg", 84, "RGB"))


# The file format


def test_write_sorts_rows_and_load_reads_any_chunking(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([2, 0, 2, 1, 2, 2, 0, 2])
    images = rng.integers(0, 256, (8, 2, 3, 5), dtype=np.uint8)
    drawn_by = [f"d{i}" for i in range(8)]
    path = tmp_path / "new" / "folder" / "t.parquet"  # missing folders are made
    write_dataset(path, images, labels, ["a", "b", "c"], ["x", "x", "y"], drawn_by, {"name": "t", "source": ["here"]})
    data = load_dataset(path)
    order = np.argsort(labels, kind="stable")
    assert np.array_equal(data.images, images[order]) and data.labels.tolist() == sorted(labels.tolist())
    assert drawers(path) == [drawn_by[i] for i in order]
    assert data.class_groups == ("x", "x", "y") and data.name == "t"
    info = dataset_info(path)
    assert info["images_per_class"] == {"min": 1, "median": 2.0, "max": 5}
    assert info["classes_per_group"] == {"x": 2, "y": 1} and info["image_shape"] == [2, 3, 5]
    many = tmp_path / "chunks.parquet"  # several row groups: several chunks to join
    pq.write_table(pq.read_table(path), many, row_group_size=3)
    assert pq.ParquetFile(many).num_row_groups == 3
    assert np.array_equal(load_dataset(many).images, data.images)
    ungrouped = write_dataset(tmp_path / "u.parquet", images, labels, ["a", "b", "c"])
    assert pq.read_table(ungrouped)["drawer"].null_count == 8 and load_dataset(ungrouped).class_groups == ("",) * 3


def test_write_rejects_bad_arrays(tmp_path):
    images = np.zeros((3, 1, 2, 2), np.uint8)
    for args in [(images.astype(np.float32), [0, 0, 1], ["a", "b"]), (images, [0, 0, 2], ["a", "b"]),
                 (images, [0, 0, 0], ["a", "b"]), (images, [0, 1], ["a", "b"]), (images[:, 0], [0, 0, 1], ["a", "b"])]:
        with pytest.raises(DataError):
            write_dataset(tmp_path / "bad.parquet", *args)
    assert list(tmp_path.iterdir()) == []


def test_dataset_info_reports_sizes(omniglot):
    info = dataset_info(omniglot.path)
    assert info == {
        "name": "omniglot", "path": str(omniglot.path), "bytes": omniglot.path.stat().st_size,
        "image_shape": [1, 28, 28], "images": 24, "classes": 6, "groups": 2,
        "images_per_class": {"min": 4, "median": 4.0, "max": 4},
        "classes_per_group": {"Alpha": 3, "Beta_(Test)": 3}, "source": info["source"]}


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    (tmp_path / "d.parquet").mkdir()  # the rename onto it fails after the temporary file is written
    (tmp_path / "d.parquet" / "keep").write_text("x")
    with pytest.raises(DataError, match="cannot write .*d.parquet"):
        write_dataset(tmp_path / "d.parquet", np.zeros((1, 1, 2, 2), np.uint8), [0], ["a"])
    assert [p.name for p in tmp_path.rglob("*")] == ["d.parquet", "keep"]


class Interrupted(BaseException):
    """Stands in for KeyboardInterrupt, which would stop pytest itself if it escaped the test."""


def _interrupt(signum, frame):
    raise Interrupted


def _write_interrupted_after(delay: float, write) -> bool:
    """Run ``write`` with an interrupt due after ``delay`` s; whether the interrupt came first."""
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, delay)
            write()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return False
    except Interrupted:
        return True


def test_an_interrupted_write_leaves_all_or_nothing(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4000, 3, 32, 32), dtype=np.uint8)  # random: slow to compress
    path = tmp_path / "d.parquet"

    def write():
        write_dataset(path, images, np.repeat(np.arange(20), 200), [f"c{i}" for i in range(20)])

    write()  # the first write is slower (imports, page cache)
    started = time.perf_counter()
    write()
    took, complete = time.perf_counter() - started, path.read_bytes()
    path.unlink()
    previous = signal.signal(signal.SIGALRM, _interrupt)
    interrupted = 0
    try:
        for delay in np.linspace(0.05, 1.5, 20) * took:
            interrupted += _write_interrupted_after(delay, write)
            assert [p.name for p in tmp_path.iterdir()] in ([], ["d.parquet"])  # never a temporary file
            if path.exists():
                assert path.read_bytes() == complete
                path.unlink()
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert interrupted >= 3


def test_a_corrupt_page_is_an_error_not_wrong_pixels(omniglot, tmp_path):
    path = tmp_path / "damaged.parquet"
    data = bytearray(omniglot.path.read_bytes())
    image_chunk = pq.ParquetFile(omniglot.path).metadata.row_group(0).column(4)
    data[image_chunk.data_page_offset + image_chunk.total_compressed_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"^{re.escape(str(path))} is not a readable Parquet file: .*"):
        load_dataset(path)


# The command line


def test_cli_import_and_info(src, tmp_path, capsys):
    out = tmp_path / "cli" / "omniglot.parquet"
    code, stdout, stderr = cli(capsys, "data", "import", "omniglot", src.zip, "--output", out)
    assert code == 0 and stderr == ""
    summary = r"24 images, 6 classes, 2 groups, 1x28x28, \d+\.\d MB in \d+\.\d s\n"
    assert re.fullmatch(rf"wrote {re.escape(str(out))}: {summary}", stdout)
    code, stdout, _ = cli(capsys, "data", "info", out)
    assert code == 0
    assert "omniglot" in stdout and "1x28x28" in stdout and "6 (4 / 4 / 4 images per class" in stdout
    assert re.search(r"^Alpha\s+3$", stdout, re.M) and re.search(r"^Beta_\(Test\)\s+3$", stdout, re.M)
    code, stdout, _ = cli(capsys, "data", "info", out, "--json")
    assert code == 0 and len(stdout.splitlines()) == 1 and json.loads(stdout) == dataset_info(out)
    for args in (["folder", src.flat, "--channels", "1", "--size", "8"], ["miniimagenet", src.mini, "--size", "8"]):
        code, stdout, _ = cli(capsys, "data", "import", *args, "--output", tmp_path / "x.parquet", "--force")
        assert code == 0 and stdout.startswith(f"wrote {tmp_path / 'x.parquet'}: ")


def _put(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _remove(path: Path) -> Path:
    path.unlink()
    return path


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _edit(path: Path, old: str, new: str) -> Path:
    path.write_text(path.read_text().replace(old, new, 1))
    return path


def _truncate(path) -> Path:
    path = Path(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _mini(t: Path, s, reason: str, edit) -> tuple[str, list, Path]:
    """A copy of the mini-ImageNet fixture changed by ``edit(root)``, which returns what to name."""
    root = _copy(s.mini, t / "mini")
    return reason, ["miniimagenet", root], edit(root)


def _class_in_two_splits(root: Path) -> str:
    _edit(root / "test.csv", ",n04522168", ",n02110063")  # a train class
    return "n02110063"


MEMBER = "images_background/Alpha/character02/0102_03.png"
# Each case makes a bad input in a temporary folder: (what the error says, the arguments of
# `distmeta data import`, the file or class it names).
BAD_IMPORTS = {
    "omniglot-missing": lambda t, s: ("not found", ["omniglot", t / "background.zip"], t / "background.zip"),
    "omniglot-not-a-zip": lambda t, s: ("neither a folder nor a readable zip", ["omniglot", _put(t / "a.zip", "hi")],
                                        t / "a.zip"),
    "omniglot-truncated-zip": lambda t, s: ("neither a folder nor a readable zip",
                                            ["omniglot", _truncate(shutil.copy(s.zip, t))], t / s.zip.name),
    "omniglot-no-images": lambda t, s: ("no PNG images", ["omniglot", _put(t / "empty" / "README", "").parent],
                                        t / "empty"),
    "omniglot-corrupt-member": lambda t, s: (
        "corrupt image", ["omniglot", zip_folder(s.omniglot, t / "images_background.zip", damaged=MEMBER)],
        f"{t / 'images_background.zip'}:{MEMBER}"),
    "omniglot-corrupt-file": lambda t, s: (
        "corrupt image", ["omniglot", _copy(s.omniglot, t / "images_background")],
        _truncate(t / "images_background" / "Alpha" / "character01" / "0101_02.png")),
    "omniglot-same-set-twice": lambda t, s: ("appears twice", ["omniglot", s.zip, s.omniglot], "Alpha/character01"),
    "folder-missing": lambda t, s: ("not found", ["folder", t / "nothing"], t / "nothing"),
    "folder-no-images": lambda t, s: ("no images found", ["folder", _put(t / "txt" / "cls" / "a.txt", "").parents[1]],
                                      t / "txt"),
    "folder-mixed-depths": lambda t, s: (
        "out of place", ["folder", _copy(s.grouped, t / "g")],
        shutil.copy(s.grouped / "zeta" / "b_cls" / "img0.png", t / "g" / "zeta")),
    "folder-truncated-jpeg": lambda t, s: (
        "corrupt image", ["folder", _copy(s.grouped, t / "g")], _truncate(t / "g" / "zeta" / "a_cls" / "img1.jpg")),
    "mini-missing-csv": lambda t, s: _mini(t, s, "missing", lambda root: _remove(root / "test.csv")),
    "mini-bad-header": lambda t, s: _mini(t, s, "header filename,label",
                                          lambda root: _edit(root / "val.csv", "filename,label", "file,wnid")),
    "mini-bad-row": lambda t, s: _mini(t, s, "line 2: expected filename,label",
                                       lambda root: _edit(root / "train.csv", ".jpg,", ".jpg,x,")),
    "mini-missing-image": lambda t, s: _mini(t, s, "not found",
                                             lambda root: _remove(root / "images" / "n0297135600000001.jpg")),
    "mini-corrupt-image": lambda t, s: _mini(t, s, "corrupt image",
                                             lambda root: _truncate(root / "images" / "n0452216800000002.jpg")),
    "mini-class-in-two-splits": lambda t, s: _mini(t, s, "appears twice", _class_in_two_splits),
}


@pytest.mark.parametrize("case", BAD_IMPORTS)
def test_bad_import_input_is_one_line_and_writes_nothing(case, src, tmp_path, capsys):
    reason, args, named = BAD_IMPORTS[case](tmp_path, src)
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, stderr = cli(capsys, "data", "import", *args, "--output", out / "d.parquet")
    assert code == 2 and stdout == "" and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("distmeta: error: ") and reason in stderr and str(named) in stderr, stderr
    assert list(out.iterdir()) == []


def test_existing_output_needs_force_and_is_left_untouched(src, tmp_path, capsys):
    out = tmp_path / "d.parquet"
    out.write_bytes(b"precious")
    code, _, stderr = cli(capsys, "data", "import", "omniglot", src.zip, "--output", out)
    assert code == 2 and stderr == f"distmeta: error: {out} already exists (use --force to overwrite)\n"
    assert out.read_bytes() == b"precious" and [p.name for p in tmp_path.iterdir()] == ["d.parquet"]
    assert cli(capsys, "data", "import", "omniglot", src.zip, "--output", out, "--force")[0] == 0
    assert load_dataset(out).num_classes == 6 and [p.name for p in tmp_path.iterdir()] == ["d.parquet"]


def _rewritten(t: Path, omniglot, change) -> Path:
    """The imported fixture with its table changed by ``change``, its metadata kept."""
    path, table = t / "changed.parquet", pq.read_table(omniglot.path)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path)
    return path


def _plain_parquet(t: Path) -> Path:
    pq.write_table(pa.table({"label": pa.array([0], pa.int32())}), t / "plain.parquet")
    return t / "plain.parquet"


# Each case makes a bad file in a temporary folder: (what the error says, the file).
BAD_FILES = {
    "missing": lambda t, o: ("dataset not found", t / "none.parquet"),
    "not-parquet": lambda t, o: ("not a readable Parquet file", _put(t / "a.parquet", "label,image\n")),
    "truncated": lambda t, o: ("not a readable Parquet file", _truncate(shutil.copy(o.path, t))),
    "no-distmeta-metadata": lambda t, o: ("not a distmeta dataset", _plain_parquet(t)),
    "wrong-columns": lambda t, o: ("has columns (label: int32, class: string", _rewritten(
        t, o, lambda table: table.rename_columns(["label", "class", "group", "drawer", "image"]))),
    "labels-with-a-gap": lambda t, o: ("labels must be sorted", _rewritten(t, o, lambda table: table.set_column(
        0, table.schema.field("label"), pa.array(np.repeat([0, 1, 2, 3, 4, 6], DRAWINGS), pa.int32())))),
    "labels-out-of-order": lambda t, o: ("labels must be sorted", _rewritten(
        t, o, lambda table: table.take(np.arange(24)[::-1]))),
    "class-split-in-two-groups": lambda t, o: ("disagree on its group", _rewritten(t, o, lambda table: table.set_column(
        2, table.schema.field("group"), pa.array(["Alpha"] * 11 + ["Other"] + ["Beta_(Test)"] * 12)))),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_dataset_file_is_one_line_naming_it(case, omniglot, tmp_path, capsys):
    reason, path = BAD_FILES[case](tmp_path, omniglot)
    for command in (["data", "info", path], ["data", "info", path, "--json"]):
        code, stdout, stderr = cli(capsys, *command)
        assert code == 2 and stdout == "" and len(stderr.splitlines()) == 1, stderr
        assert stderr.startswith("distmeta: error: ") and reason in stderr and str(path) in stderr, stderr
    with pytest.raises(DataError, match=re.escape(str(path))):
        load_dataset(path)


# The real thing


@pytest.mark.slow
def test_real_omniglot_background_zip(tmp_path):
    if not REAL_OMNIGLOT.exists():
        pytest.skip(f"{REAL_OMNIGLOT} is not here (the shared data sits beside the repository)")
    summary = import_omniglot([REAL_OMNIGLOT], tmp_path / "omniglot.parquet", progress=False)
    assert (summary["images"], summary["classes"], summary["groups"]) == (19280, 964, 30)
    data = load_dataset(summary["output"])
    assert data.images.shape == (19280, 1, 28, 28) and len(data.groups) == 30
    assert np.all(data.class_counts == 20) and data.class_names[0] == "Alphabet_of_the_Magi/character01"
    assert drawers(summary["output"])[:20] == [f"{d:02d}" for d in range(1, 21)]
    with zipfile.ZipFile(REAL_OMNIGLOT) as archive, archive.open(
            "images_background/Tifinagh/character55/0964_20.png") as last:
        assert np.array_equal(data.images[-1], lanczos(last, 28, "L"))
    assert dataset_info(summary["output"])["classes_per_group"]["Latin"] == 26
