"""SynthFaces: determinism, identity stability, labels on disk, split hygiene, Dataset contract, attribute effects."""
import json

import numpy as np
import pytest
import torch

from clcae.data import synthfaces as sf

A = len(sf.ATTRIBUTES)


def _render(person_id=0, seed=0, res=64, detail_seed=0, **attrs):
    return sf.render_face(sf.sample_identity(person_id, seed), sf.neutral_attributes(**attrs), res, detail_seed)


def _max_block_diff(a, b, block=8):
    """Largest mean absolute difference over ``block x block`` tiles: local changes (a mouth, glasses) count."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(-1)
    r = d.shape[0] // block
    return d.reshape(r, block, r, block).mean(axis=(1, 3)).max()


def test_attribute_table_is_consistent():
    names = [a.name for a in sf.ATTRIBUTES]
    assert tuple(names) == sf.ATTRIBUTE_NAMES and len(set(names)) == A
    for a in sf.ATTRIBUTES:
        assert a.low < a.high and a.kind in ("continuous", "binary") and a.doc
    rng = np.random.default_rng(0)
    for _ in range(200):
        attrs = sf.sample_attributes(rng)
        assert set(attrs) == set(names)
        for a in sf.ATTRIBUTES:
            assert a.low <= attrs[a.name] <= a.high
            if a.kind == "binary":
                assert attrs[a.name] in (a.low, a.high)
    vec = sf.attributes_to_vector(attrs)
    assert vec.dtype == np.float32 and vec.shape == (A,)
    back = sf.vector_to_attributes(vec)
    assert all(abs(back[k] - attrs[k]) < 1e-6 for k in names)


def test_render_is_deterministic_and_seeds_matter():
    identity = sf.sample_identity(3, seed=0)
    attrs = sf.sample_attributes(np.random.default_rng(5))
    a = sf.render_face(identity, attrs, 64, detail_seed=11)
    b = sf.render_face(sf.sample_identity(3, seed=0), dict(attrs), 64, detail_seed=11)
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, sf.render_face(identity, attrs, 64, detail_seed=12))  # fine detail differs
    assert not np.array_equal(a, sf.render_face(sf.sample_identity(4, 0), attrs, 64, detail_seed=11))
    assert not np.array_equal(a, sf.render_face(sf.sample_identity(3, 1), attrs, 64, detail_seed=11))
    # the detail seed only adds fine detail: the same face, not a different one
    assert np.abs(a.astype(int) - sf.render_face(identity, attrs, 64, 12).astype(int)).mean() < 12


def test_identity_is_stable_across_images_and_calls():
    assert sf.sample_identity(7, 2) == sf.sample_identity(7, 2)
    assert json.loads(json.dumps(sf.sample_identity(7, 2))) == sf.sample_identity(7, 2)  # serialisable
    assert sf.sample_identity(7, 2) != sf.sample_identity(8, 2)
    assert sf.sample_identity(7, 2) != sf.sample_identity(7, 3)
    ds = sf.SynthFaces(40, split="train", seed=2, n_persons=10)
    pids = ds.person_ids()
    assert [ds.labels(i)["person_id"] for i in range(40)] == pids.tolist()
    same = [i for i in range(40) if pids[i] == pids[0]]
    assert len(same) == 4
    assert all(ds.identity(i) == ds.identity(0) for i in same)
    assert ds.labels(same[1]) != ds.labels(same[0])  # per-image attributes vary
    styles = {sf.sample_identity(p, 0)["hair_style"] for p in range(200)}
    assert styles == set(sf.HAIR_STYLES)


def test_train_and_test_persons_are_disjoint():
    train = set(sf.person_ids_for_split("train", 5000).tolist())
    test = set(sf.person_ids_for_split("test", 500).tolist())
    assert len(train) == 5000 and len(test) == 500 and not train & test
    a = sf.SynthFaces(300, split="train", n_persons=100)
    b = sf.SynthFaces(300, split="test", n_persons=100)
    assert not set(a.person_ids().tolist()) & set(b.person_ids().tolist())
    assert a.labels(0) != b.labels(0)
    with pytest.raises(ValueError):
        sf.SynthFaces(10, split="val")


@pytest.mark.parametrize("res", [64, 128])
def test_dataset_items_have_the_documented_contract(res):
    ds = sf.SynthFaces(6, res=res, split="test", seed=1, n_persons=3)
    x, labels = ds[1]
    assert x.shape == (3, res, res) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.std()) > 0.1
    assert labels["person_id"].dtype == torch.int64 and labels["person_id"].ndim == 0
    assert int(labels["person_id"]) == sf.TEST_PERSON_OFFSET + 1
    assert labels["attributes"].shape == (A,) and labels["attributes"].dtype == torch.float32
    expected = sf.attributes_to_vector(ds.labels(1))
    assert torch.equal(labels["attributes"], torch.from_numpy(expected))
    assert np.array_equal(ds.image(1), ((x.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8))
    assert torch.equal(ds[-5][0], x)
    with pytest.raises(IndexError):
        ds[6]
    if res == 64:
        batch_x, batch_labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
        assert batch_x.shape == (3, 3, 64, 64)
        assert batch_labels["person_id"].shape == (3,) and batch_labels["attributes"].shape == (3, A)
        assert ds.attribute_matrix().shape == (6, A)
        flipped = sf.SynthFaces(6, res=64, split="test", seed=1, n_persons=3, transform=lambda t: t.flip(-1))
        assert torch.equal(flipped[1][0], x.flip(-1))


def test_labels_round_trip_through_a_written_folder(tmp_path):
    n = 10
    path = sf.write_dataset(tmp_path, n, res=64, split="train", seed=3, workers=1, n_persons=4)
    sf.write_dataset(tmp_path, 3, res=64, split="test", seed=3, workers=1, n_persons=2)
    rows = sf.read_labels(path)
    assert len(rows) == n
    for i, row in enumerate(rows):
        expected = sf.item_labels(i, "train", seed=3, n_persons=4)
        assert row == dict(expected, file=f"images/train/{i:06d}.png")  # floats bit-exact
        assert (tmp_path / row["file"]).is_file()
    meta = sf.read_meta(tmp_path)
    assert meta["seed"] == 3 and meta["res"] == 64 and meta["version"] == sf.VERSION
    assert [a["name"] for a in meta["attributes"]] == list(sf.ATTRIBUTE_NAMES)
    assert meta["splits"]["train"]["n"] == n and meta["splits"]["test"]["n_persons"] == 2
    test_ids = {r["person_id"] for r in sf.read_labels(tmp_path / "labels_test.csv")}
    assert not test_ids & {r["person_id"] for r in rows}
    # the PNGs are exactly what the on-the-fly dataset renders
    folder = sf.SynthFacesFolder(tmp_path, "train")
    live = sf.SynthFaces(n, 64, "train", seed=3, n_persons=4)
    for i in (0, 7):
        assert torch.equal(folder[i][0], live[i][0])
        assert torch.equal(folder[i][1]["attributes"], live[i][1]["attributes"])
    with pytest.raises(ValueError):
        sf.write_dataset(tmp_path, 2, res=64, split="train", seed=4)  # another seed into the same folder


def test_parallel_writer_matches_serial(tmp_path):
    sf.write_dataset(tmp_path / "a", 70, split="test", seed=5, workers=1, n_persons=7)
    sf.write_dataset(tmp_path / "b", 70, split="test", seed=5, workers=2, n_persons=7)
    for i in (0, 69):
        name = f"images/test/{i:06d}.png"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "labels_test.csv").read_text() == (tmp_path / "b" / "labels_test.csv").read_text()


@pytest.mark.parametrize("attribute", sf.ATTRIBUTES, ids=lambda a: a.name)
def test_each_attribute_visibly_changes_the_image(attribute):
    # local attributes (mouth, eyes, glasses) change a few tiles a lot; global ones change everything
    for person in (0, 1, 2):
        low = _render(person, detail_seed=9, **{attribute.name: attribute.low})
        high = _render(person, detail_seed=9, **{attribute.name: attribute.high})
        assert _max_block_diff(low, high) > 4.0, (attribute.name, person)


def test_render_checks_its_inputs():
    identity = sf.sample_identity(0)
    attrs = sf.neutral_attributes()
    with pytest.raises(KeyError):
        sf.render_face(identity, {k: v for k, v in attrs.items() if k != "smile"})
    with pytest.raises(KeyError):
        sf.neutral_attributes(grin=1.0)
    with pytest.raises(ValueError):
        sf.render_face(identity, attrs, res=8)
    # out-of-range values are clipped, not extrapolated
    clipped = sf.render_face(identity, dict(attrs, yaw=3.0))
    assert np.array_equal(clipped, sf.render_face(identity, dict(attrs, yaw=1.0)))
    assert sf.render_face(identity, attrs, res=256).shape == (256, 256, 3)


def test_shipped_examples_are_the_first_test_renders():
    """examples/ holds items 0-7 of the test split, bit for bit, with their labels (examples/README.md)."""
    import csv
    from pathlib import Path

    from PIL import Image

    examples = Path(__file__).resolve().parents[1] / "examples"
    files = sorted(examples.glob("synthfaces_test_*.png"))
    assert len(files) == 8
    ds = sf.SynthFaces(8, res=64, split="test", seed=0)
    with open(examples / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = {r["file"]: r for r in csv.DictReader(fh)}
    for i, path in enumerate(files):
        assert path.name == f"synthfaces_test_{i:06d}.png"
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), ds.image(i)), path.name
        lab = ds.labels(i)
        assert int(rows[path.name]["person_id"]) == lab["person_id"]
        for name in sf.ATTRIBUTE_NAMES:
            assert float(rows[path.name][name]) == pytest.approx(lab[name], abs=1e-12), (path.name, name)
