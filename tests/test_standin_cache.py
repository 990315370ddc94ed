"""Stand-in cache folders keyed by what the model is trained from: data files' bytes, loader options, settings."""

import json

import pytest

from melo.data import ClassificationFields, classification_task
from melo.standins import cache, load_standin, qa, scotus
from melo.standins.cache import INFO_FILE

SETTINGS = {"epochs": 1, "lr": 0.1}


def data_dir(root, nq_text):
    (root / "nq").mkdir(parents=True)
    (root / "nq" / "NQ-open.dev.jsonl").write_text(nq_text)
    return root


class StubTrainer:
    """A trainer that writes a finished save (the info JSON) and counts its calls; its loader reads the folder."""

    def __init__(self, version=1, settings=SETTINGS):
        self.version, self.settings, self.trained = version, settings, []

    def __call__(self, directory, *args, **kwargs):
        self.trained.append(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / INFO_FILE).write_text(json.dumps({"version": self.version, "settings": self.settings}))

    @staticmethod
    def load(directory):
        return "model", directory


def test_key_follows_bytes_options_settings_and_version_not_paths(tmp_path):
    a = tmp_path / "a.jsonl"
    b = tmp_path / "elsewhere" / "b.jsonl"
    b.parent.mkdir()
    a.write_text('{"question": "q", "answer": ["x"]}\n')
    b.write_text(a.read_text())
    key = cache.data_key(1, SETTINGS, cache.data_sources({"upstream": a}))
    assert len(key) == 16 and key == cache.data_key(1, SETTINGS, cache.data_sources({"upstream": b}))
    others = [
        cache.data_key(2, SETTINGS, cache.data_sources({"upstream": a})),
        cache.data_key(1, {**SETTINGS, "lr": 0.2}, cache.data_sources({"upstream": a})),
        cache.data_key(1, SETTINGS, cache.data_sources({"upstream": a}, {"split_field": "term"})),
        cache.data_key(1, SETTINGS, cache.data_sources({"edits": a})),  # the file's role counts
    ]
    b.write_text('{"question": "q", "answer": ["y"]}\n')
    others.append(cache.data_key(1, SETTINGS, cache.data_sources({"upstream": b})))
    assert len({key, *others}) == 6
    sources = cache.data_sources({"upstream": a}, {"n": 3})
    assert sources["files"]["upstream"]["bytes"] == a.stat().st_size and sources["options"] == {"n": 3}


def test_load_or_train_keyed_folders(tmp_path):
    root = tmp_path / "cache" / "standins" / "toy"
    file = tmp_path / "train.jsonl"
    file.write_text("one\n")
    trainer = StubTrainer()
    _, first, info = cache.load_or_train(root, 1, SETTINGS, trainer.load, trainer, cache.data_sources({"d": file}))
    assert first.parent == root and len(trainer.trained) == 1
    assert info["data"]["key"] == first.name and info["data"]["files"]["d"]["path"] == str(file)
    _, again, _ = cache.load_or_train(root, 1, SETTINGS, trainer.load, trainer, cache.data_sources({"d": file}))
    assert again == first and len(trainer.trained) == 1  # same bytes: a hit, no training
    file.write_text("two\n")
    _, second, _ = cache.load_or_train(root, 1, SETTINGS, trainer.load, trainer, cache.data_sources({"d": file}))
    assert second != first and len(trainer.trained) == 2 and sorted(p.name for p in root.iterdir()) == sorted(
        [first.name, second.name])
    _, unkeyed, _ = cache.load_or_train(root, 1, SETTINGS, trainer.load, trainer)  # the demo's way: no sources
    assert unkeyed == root


def stub_standin(module, tmp_path, monkeypatch):
    """A stand-in module whose training is a StubTrainer, caching under tmp_path."""
    monkeypatch.setenv("MELO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(module, "SETTINGS", SETTINGS)
    trainer = StubTrainer(module.VERSION)
    monkeypatch.setattr(module, "train_and_save", trainer)
    monkeypatch.setattr(module, "load_saved", trainer.load)
    return trainer


def test_each_data_dir_gets_its_own_qa_standin(tmp_path, monkeypatch):
    trainer = stub_standin(qa, tmp_path, monkeypatch)
    one = data_dir(tmp_path / "one", '{"question": "q", "answer": ["a"]}\n')
    two = data_dir(tmp_path / "two", '{"question": "q", "answer": ["b"]}\n')
    copy = data_dir(tmp_path / "copy", (one / "nq" / "NQ-open.dev.jsonl").read_text())
    assert qa.load_or_train(one) == ("model", qa.cache_path(one))
    assert qa.load_or_train(two) == ("model", qa.cache_path(two))
    assert qa.cache_path(one) != qa.cache_path(two) and len(trainer.trained) == 2
    assert qa.load_or_train(copy) == ("model", qa.cache_path(one))  # same bytes elsewhere: a hit
    assert qa.load_or_train(one)[1] == qa.cache_path(one) and len(trainer.trained) == 2
    assert qa.cached_info(two)["data"]["files"]["upstream"]["path"] == str(two / "nq" / "NQ-open.dev.jsonl")


def test_scotus_standin_keyed_by_the_users_file_and_fields(tmp_path, monkeypatch):
    trainer = stub_standin(scotus, tmp_path, monkeypatch)
    monkeypatch.setattr(scotus, "load_data", lambda data_dir: pytest.fail("read the data dir"))
    path = tmp_path / "cases.csv"
    path.write_text("text,label,split,year\na,x,upstream,2001\nb,y,upstream,2002\nc,x,edit,2011\nd,y,edit,2003\n")
    by_split = classification_task(path)
    by_year = classification_task(path, ClassificationFields(split_field="year", edit_after=2010))
    assert load_standin("minilm-scotus", data=by_split) == ("model", scotus.cache_path(data=by_split))
    assert load_standin("minilm-scotus", data=by_year) == ("model", scotus.cache_path(data=by_year))
    assert load_standin("minilm-scotus", data=classification_task(path))[1] == scotus.cache_path(data=by_split)
    assert len(trainer.trained) == 2 and scotus.cache_path(data=by_split) != scotus.cache_path(data=by_year)
    assert scotus.cached_info(data=by_year)["data"]["options"]["edit_after"] == 2010
