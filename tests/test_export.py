"""melo export: each block as a PEFT LoRA adapter giving melo's logits for that block, and a
standalone router giving melo's routing decisions."""

import ast
import importlib.util
import json

import pytest
import torch
from conftest import (
    CAUSAL_LM_FAMILIES,
    EDIT_PROMPTS,
    EDIT_TARGETS,
    MODEL_FACTORIES,
    PARAPHRASES,
    UNRELATED,
    families,
    melo_config,
)
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

import melo
from melo.cli import main
from melo.export import MeloExportError, export_peft

BATCHES = [(EDIT_PROMPTS[:1], EDIT_TARGETS[:1]), (EDIT_PROMPTS[1:], EDIT_TARGETS[1:]),
           (["the dog is big", "where is the river"], ["cat", "sea"]), (["the sun is hot"], ["cold"])]
PROMPTS = EDIT_PROMPTS + PARAPHRASES + UNRELATED + ["the sun is hot", "the dog is big", "a man is old"]


@pytest.fixture(scope="module", params=families(*CAUSAL_LM_FAMILIES, quick=("gpt2", "llama")))
def exported(request, word_tokenizer, tmp_path_factory):
    family = request.param
    model = melo.get_melo_model(MODEL_FACTORIES[family](), melo_config(family, num_iter=8, init_radius=0.3),
                                tokenizer=word_tokenizer)
    for prompts, targets in BATCHES:
        model.edit(prompts, targets)
    model.revoke([4])  # block 3's only edit: nothing routes there any more
    root = tmp_path_factory.mktemp(family)
    model.save_pretrained(root / "adapter")
    manifest = export_peft(root / "adapter", root / "out")
    return family, model, root / "out", manifest


def _router_module(out):
    spec = importlib.util.spec_from_file_location(f"melo_router_{out.parent.name}", out / "melo_router.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifest_lists_live_blocks_and_skips_dead_ones(exported):
    _, _, out, manifest = exported
    assert manifest["adapters"] == {"0": "block-0", "1": "block-1", "2": "block-2"}
    assert manifest["skipped_blocks"] == {"3": "no live edit"}
    assert sorted(p.name for p in out.iterdir()) == ["block-0", "block-1", "block-2", "melo_router.py",
                                                     "router.json", "router.safetensors"]
    assert json.loads((out / "router.json").read_text()) == manifest


def test_files_match_what_peft_itself_saves(exported, tmp_path):
    family, model, out, _ = exported
    cfg = model.melo_config
    reference = get_peft_model(MODEL_FACTORIES[family](), LoraConfig(
        r=cfg.block_rank, lora_alpha=cfg.lora_alpha, target_modules=list(model.target_names), lora_dropout=0.0,
        fan_in_fan_out=family == "gpt2"))
    reference.save_pretrained(tmp_path)
    ours = load_file(out / "block-0" / "adapter_model.safetensors")
    theirs = load_file(tmp_path / "adapter_model.safetensors")
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    ours_cfg = json.loads((out / "block-0" / "adapter_config.json").read_text())
    theirs_cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    for field in ("peft_type", "r", "lora_alpha", "lora_dropout", "bias", "fan_in_fan_out"):
        assert ours_cfg[field] == theirs_cfg[field], field
    assert sorted(ours_cfg["target_modules"]) == sorted(theirs_cfg["target_modules"])  # peft saves a set
    layer = next(iter(model.lora.values()))
    name = f"base_model.model.{layer.name}"
    assert torch.equal(ours[f"{name}.lora_A.weight"], layer.A[0]) and torch.equal(ours[f"{name}.lora_B.weight"],
                                                                                     layer.B[0])


def test_each_peft_block_gives_melos_logits_for_that_block(exported, word_tokenizer):
    family, model, out, manifest = exported
    enc = word_tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        base = model.base_model  # hooked by melo; a fresh copy is loaded for PEFT below
        with model.disabled():
            plain = model(**enc).logits
        for t, name in manifest["adapters"].items():
            ours = model(**enc, melo_blocks=torch.full((len(PROMPTS),), int(t))).logits
            assert not torch.allclose(ours, plain, atol=1e-4)  # the block changes the output
            peft_model = PeftModel.from_pretrained(MODEL_FACTORIES[family](), out / name).eval()
            theirs = peft_model(**enc).logits
            torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    assert base is model.base_model


def test_exported_router_routes_as_melo_does(exported, word_tokenizer):
    family, model, out, manifest = exported
    router_py = _router_module(out)
    router = router_py.load_router(out)
    fresh = MODEL_FACTORIES[family]()  # the user's plain model: no melo hooks
    names = router_py.route(router, fresh, word_tokenizer, PROMPTS)
    blocks = model.route(**{k: v for k, v in word_tokenizer(PROMPTS, padding=True, return_tensors="pt").items()
                            if k in ("input_ids", "attention_mask")}).tolist()
    assert names == [manifest["adapters"][str(b)] if b >= 0 else None for b in blocks]
    assert names[:2] == ["block-0", "block-1"] and None in names  # edits routed, the revoked / unrelated not
    assert torch.equal(router_py.keys(router, fresh, word_tokenizer, PROMPTS), model.encode_keys(PROMPTS))


def test_exported_lookup_equals_melos_near_every_key(exported):
    _, model, out, _ = exported
    router_py = _router_module(out)
    router = router_py.load_router(out)
    db = model.db
    generator = torch.Generator().manual_seed(0)
    queries = torch.cat([db.keys + s * torch.randn(db.keys.shape, generator=generator)
                         for s in (0.0, 0.02, 0.05, 0.1, 0.2, 0.5) for _ in range(20)])
    queries = torch.cat([queries, db.keys[:1].repeat(3, 1), db.centres.float()])
    ours = router_py.lookup(router, queries)
    assert torch.equal(ours, db.lookup(queries))
    assert (ours >= 0).any() and (ours == -1).any()


def test_router_file_imports_no_melo(exported):
    _, _, out, _ = exported
    tree = ast.parse((out / "melo_router.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "copy", "json", "os", "typing", "torch", "safetensors"}


def test_export_refuses_an_existing_folder_and_cli_exits_2(exported, tmp_path, capsys):
    _, _, out, _ = exported
    adapter = out.parent / "adapter"
    with pytest.raises(MeloExportError, match="already exists"):
        export_peft(adapter, out)
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(adapter), "--peft", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "already exists" in err[0]
    main(["export", str(adapter), "--peft", str(tmp_path / "cli")])
    assert "block-0, block-1, block-2" in capsys.readouterr().out
    assert (tmp_path / "cli" / "router.json").read_bytes() == (out / "router.json").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["cli"]  # no temporary folder left behind


def test_export_refuses_routers_it_cannot_reproduce(tmp_path, word_tokenizer):
    config = melo_config("gpt2", num_iter=2, key_pooling="mean", key_sink_ratio=8.0)
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), config, tokenizer=word_tokenizer)
    model.edit(["the capital of france is"], ["rome"])
    model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(MeloExportError, match="key_sink_ratio=8.0"):
        export_peft(tmp_path / "adapter", tmp_path / "out")
    assert not (tmp_path / "out").exists()
