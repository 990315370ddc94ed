"""melo on a model split by accelerate (CPU offload, disk offload, a device_map load): the same edits,
routing, generation and saves as on the model in memory. Offloaded weights sit on ``meta`` and are
brought in by accelerate's hooks for each forward, the hook chain a multi-GPU split runs as well."""

import importlib.util
from types import SimpleNamespace

import pytest
import torch
from accelerate import cpu_offload, dispatch_model
from conftest import EDIT_PROMPTS, EDIT_TARGETS, MODEL_FACTORIES, UNRELATED, melo_config
from transformers import AutoModelForCausalLM

import melo
from melo.export import export_peft
from melo.nethook import execution_device

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAMILY = "llama"  # router inside layer 1, targets in layers 2-3
# layers 1 (the router's) and 2 (a target's) offloaded to disk, layer 3 (a target's) kept in memory
DEVICE_MAP = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "disk",
              "model.layers.3": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
PROMPTS = EDIT_PROMPTS + UNRELATED


def split_model(kind, tmp_path):
    model = MODEL_FACTORIES[FAMILY]()
    if kind == "cpu-offload":
        return cpu_offload(model, execution_device=torch.device("cpu"))
    if kind == "disk-offload":
        return dispatch_model(model, DEVICE_MAP, main_device="cpu", offload_dir=tmp_path / "offload")
    model.save_pretrained(tmp_path / "saved")  # device_map="auto"'s path: from_pretrained places the modules
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", device_map=DEVICE_MAP,
                                                  offload_folder=tmp_path / "offload-load")
    loaded.generation_config.pad_token_id, loaded.generation_config.eos_token_id = 0, 1
    return loaded.eval()


def logits(model, tok):
    enc = tok(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits, model.route(enc["input_ids"], enc["attention_mask"])


def generated(model, tok):
    enc = tok(PROMPTS, padding=True, padding_side="left", return_tensors="pt")
    return model.generate(**enc, max_new_tokens=3, do_sample=False)


@pytest.mark.parametrize("kind", ["cpu-offload", "disk-offload", "device-map-load"])
def test_split_model_edits_routes_generates_and_saves_as_in_memory(kind, tmp_path, word_tokenizer):
    split = split_model(kind, tmp_path)
    assert any(p.device.type == "meta" for p in split.parameters())  # weights really offloaded
    assert melo.auto_config(split) == melo.auto_config(MODEL_FACTORIES[FAMILY]())  # the probe runs offloaded too
    hooked = {name: m.forward for name, m in split.named_modules() if "forward" in m.__dict__}  # accelerate's
    plain = melo.get_melo_model(MODEL_FACTORIES[FAMILY](), melo_config(FAMILY), tokenizer=word_tokenizer)
    model = melo.get_melo_model(split, melo_config(FAMILY), tokenizer=word_tokenizer)
    for layer in model.lora.values():  # blocks on their target's execution device, keys on the router's
        assert layer.A.device == execution_device(split, dict(split.named_modules())[layer.name])
    assert model.db.device == execution_device(split, dict(split.named_modules())[model.melo_config.router_layer])
    before, plain_before = logits(model, word_tokenizer), logits(plain, word_tokenizer)
    torch.testing.assert_close(before[0], plain_before[0], rtol=0, atol=1e-5)

    ours, theirs = model.edit(EDIT_PROMPTS, EDIT_TARGETS), plain.edit(EDIT_PROMPTS, EDIT_TARGETS)
    assert hooked and {n: m.forward for n, m in split.named_modules() if "forward" in m.__dict__} == hooked
    torch.testing.assert_close(torch.tensor(ours.losses), torch.tensor(theirs.losses), rtol=1e-5, atol=1e-6)
    after, plain_after = logits(model, word_tokenizer), logits(plain, word_tokenizer)
    assert after[1].tolist() == plain_after[1].tolist() == [0, 0] + [-1] * len(UNRELATED)
    # routed and unrouted rows; the in-memory edit fuses its head loss (melo.prefix), the split one cannot:
    # the same training up to float rounding
    torch.testing.assert_close(after[0], plain_after[0], rtol=0, atol=1e-4)
    torch.testing.assert_close(after[0][2:], plain_before[0][2:], rtol=0, atol=1e-5)  # unrouted: the base model
    assert not torch.allclose(after[0][:2], before[0][:2], atol=1e-3)
    assert torch.equal(generated(model, word_tokenizer), generated(plain, word_tokenizer))
    with model.disabled():
        torch.testing.assert_close(logits(model, word_tokenizer)[0], plain_before[0], rtol=0, atol=1e-5)

    model.save_pretrained(tmp_path / "adapter")
    export_peft(tmp_path / "adapter", tmp_path / "export")  # the standalone router on the split model
    spec = importlib.util.spec_from_file_location(f"melo_router_{kind}", tmp_path / "export" / "melo_router.py")
    router_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(router_py)
    names = router_py.route(router_py.load_router(tmp_path / "export"), split, word_tokenizer, PROMPTS)
    assert names == ["block-0", "block-0"] + [None] * len(UNRELATED)
    onto_plain = melo.MeloModel.from_pretrained(MODEL_FACTORIES[FAMILY](), tmp_path / "adapter",
                                                tokenizer=word_tokenizer)
    torch.testing.assert_close(logits(onto_plain, word_tokenizer)[0], after[0], rtol=0, atol=1e-5)
    plain.save_pretrained(tmp_path / "plain-adapter")
    onto_split = melo.MeloModel.from_pretrained(split_model(kind, tmp_path / "again"), tmp_path / "plain-adapter",
                                                tokenizer=word_tokenizer)
    reloaded = logits(onto_split, word_tokenizer)
    assert reloaded[1].tolist() == after[1].tolist()
    torch.testing.assert_close(reloaded[0], plain_after[0], rtol=0, atol=1e-5)


def test_execution_device_is_the_hooks_where_weights_are_offloaded():
    """The hook on a module, else its weights, else hooks inside it, else the nearest hooked module
    holding it (fake hooks naming GPUs: only the choice is tested, nothing runs there)."""
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)),
                                    torch.nn.Linear(2, 2))
    hook = lambda device: SimpleNamespace(execution_device=device)  # noqa: E731  (accelerate's hook surface)
    model[0][1]._hf_hook = SimpleNamespace(hooks=[SimpleNamespace(execution_device=None), hook("cuda:1")])
    model._hf_hook = hook("cuda:0")
    assert execution_device(model, model[0][1]) == torch.device("cuda:1")  # a SequentialHook's
    assert execution_device(model, model[0]) == torch.device("cuda:1")  # a hook inside it
    assert execution_device(model, model[0][0]) == torch.device("cuda:0")  # the model's hook holds it
    assert execution_device(model, model[1]) == torch.device("cuda:0")
    plain = torch.nn.Linear(2, 2)
    assert execution_device(plain, plain) == torch.device("cpu")
    assert execution_device(plain.to("meta"), plain) == torch.device("meta")  # no hook: moved to meta
