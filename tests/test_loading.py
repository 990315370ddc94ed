"""melo.loading: GGUF files converted once to a digest-keyed safetensors cache, local folders, clear errors.

The GGUF files are tiny random Llamas written here with the ``gguf`` package (byte-level BPE vocab
of 260 tokens, ChatML-style template), so everything runs offline in a few seconds.
"""

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

from melo import loading
from melo.errors import MeloLoadError

gguf = pytest.importorskip("gguf")

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
HF_TO_GGUF = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def write_tiny_gguf(path: Path, norm_shift: float = 0.0) -> Path:
    """A 2-layer Llama (hidden 32) as an f32 GGUF; ``norm_shift`` changes one weight."""
    torch.manual_seed(0)
    spelling = bytes_to_unicode()
    tokens = [spelling[b] for b in range(256)] + ["he", "hel", "<|im_start|>", "<|im_end|>"]
    layers, heads, kv_heads, hidden, inner = 2, 4, 2, 32, 64
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokens), hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inner,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=64,
        tie_word_embeddings=False))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(64)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(inner)
    writer.add_embedding_length(hidden)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * 258 + [3, 3])  # the last two are control tokens
    writer.add_token_merges([f"{spelling[ord('h')]} {spelling[ord('e')]}", "he l"])
    writer.add_bos_token_id(258)
    writer.add_eos_token_id(259)
    writer.add_add_bos_token(False)
    writer.add_chat_template(TEMPLATE)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    for i in range(layers):
        names.update({f"model.layers.{i}.{hf}.weight": f"blk.{i}.{gg}.weight" for hf, gg in HF_TO_GGUF.items()})
    state = model.state_dict()
    for hf, gg in names.items():
        array = state[hf].float().numpy().copy()
        if gg == "output_norm.weight":
            array += norm_shift
        writer.add_tensor(gg, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MELO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def logits(model, tokenizer, text: str = "hello hel") -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def direct(path: Path):
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), tokenizer


def test_gguf_converted_once_then_loaded_from_cache(gguf_file, cache, monkeypatch, capsys):
    reference = logits(*direct(gguf_file))
    model, tokenizer = loading.load_model(str(gguf_file))
    assert torch.equal(logits(model, tokenizer), reference)
    assert "converting tiny-llama.gguf to safetensors (once" in capsys.readouterr().err

    (folder,) = cache.iterdir()  # the build folder was renamed, not left beside it
    digest = loading.file_sha256([gguf_file], progress=False)
    assert folder.name == f"tiny-llama-{digest[:16]}"
    info = loading.cached_info(folder)
    assert info["sha256"] == digest and info["task"] == "causal_lm"
    assert list(folder.glob("*.safetensors")) and not list(folder.glob("*.gguf"))
    assert "quantization_config" not in (folder / "config.json").read_text()

    def no_conversion(*args, **kwargs):
        raise AssertionError("the GGUF was converted again")

    monkeypatch.setattr(loading.gguf, "convert_gguf", no_conversion)
    again, tokenizer2 = loading.load_model(str(gguf_file), progress=False)
    assert "converting" not in capsys.readouterr().err
    assert torch.equal(logits(again, tokenizer2), reference)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert tokenizer2.chat_template == TEMPLATE
    chat = tokenizer2.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False)
    assert chat == "<|im_start|>user\nhello<|im_end|>\n"
    assert tokenizer2("hello").input_ids == tokenizer("hello").input_ids


def test_changed_gguf_gets_its_own_cache(gguf_file, cache, tmp_path):
    other = write_tiny_gguf(tmp_path / "tiny-llama.gguf", norm_shift=0.5)  # same name, one weight changed
    first, _ = loading.load_model(str(gguf_file), progress=False)
    second, _ = loading.load_model(str(other), progress=False)
    assert len(list(cache.iterdir())) == 2
    assert torch.equal(second.model.norm.weight, first.model.norm.weight + 0.5)


def test_incomplete_cache_folder_is_rebuilt(gguf_file, cache):
    digest = loading.file_sha256([gguf_file], progress=False)
    stale = cache / f"tiny-llama-{digest[:16]}"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")  # no info file: an unfinished build
    model, tokenizer = loading.load_model(str(gguf_file), progress=False)
    assert loading.cached_info(stale) is not None
    assert torch.equal(logits(model, tokenizer), logits(*direct(gguf_file)))


def test_local_hf_folder(gguf_file, cache, tmp_path):
    model, tokenizer = loading.load_model(str(gguf_file), progress=False)
    model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    loaded, tokenizer2 = loading.load_model(str(tmp_path / "hf"), progress=False)
    assert torch.equal(logits(loaded, tokenizer2), logits(model, tokenizer))
    classifier, _ = loading.load_model(str(tmp_path / "hf"), "classification", progress=False)
    assert type(classifier).__name__ == "LlamaForSequenceClassification"


def test_missing_paths_name_themselves(tmp_path):
    for spec in (str(tmp_path / "nope.gguf"), str(tmp_path / "nope"), "./nope.gguf"):
        with pytest.raises(MeloLoadError, match="nope"):
            loading.load_model(spec)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MeloLoadError, match=r"config\.json"):
        loading.load_model(str(tmp_path / "empty"))


@pytest.mark.parametrize("name", sorted(loading.KNOWN_MODELS))
def test_missing_wheel_gives_install_command(name, monkeypatch, cache):
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *args: None)
    with pytest.raises(MeloLoadError) as err:
        loading.load_model(name)
    assert loading.KNOWN_MODELS[name].install in str(err.value)
    assert not cache.exists() or not list(cache.iterdir())


def test_registry_entries_are_causal_lm_ggufs():
    for entry in loading.KNOWN_MODELS.values():
        assert entry.task == "causal_lm" and entry.install.startswith("pip install ")


def test_unknown_task_is_refused(gguf_file):
    with pytest.raises(Exception, match="unknown task"):
        loading.load_model(str(gguf_file), "translation")


def fake_chunked_wheels(root: Path, gguf_path: Path, digest: str) -> loading.KnownModel:
    """Packages like gemma3-270m's: the GGUF split over three chunk packages, and a checker with SHA256SUMS."""
    data = gguf_path.read_bytes()
    cut = len(data) // 3
    chunks = [data[:cut], data[cut:2 * cut], data[2 * cut:]]
    files = []
    for i, chunk in enumerate(chunks):
        package = root / f"fake_tiny_part{i + 1}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise RuntimeError('never imported')\n")
        (package / "data" / f"tiny.gguf.part{i:02d}").write_bytes(chunk)
        files.append((package.name, f"data/tiny.gguf.part{i:02d}"))
    (root / "fake_tiny" / "data").mkdir(parents=True)
    (root / "fake_tiny" / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    (root / "fake_tiny" / "data" / "SHA256SUMS").write_text(f"{digest}  tiny.gguf\n")
    return loading.KnownModel(install="pip install fake-tiny", files=tuple(files), gguf_name="tiny.gguf",
                              checksums=("fake_tiny", "data/SHA256SUMS"))


def test_known_model_from_chunk_packages(gguf_file, cache, tmp_path, monkeypatch):
    from types import MappingProxyType

    digest = loading.file_sha256([gguf_file], progress=False)
    entry = fake_chunked_wheels(tmp_path / "site", gguf_file, digest)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(loading, "KNOWN_MODELS", MappingProxyType({"tiny": entry}))
    model, tokenizer = loading.load_model("tiny", progress=False)
    assert torch.equal(logits(model, tokenizer), logits(*direct(gguf_file)))
    (folder,) = cache.iterdir()
    assert folder.name == f"tiny-{digest[:16]}" and not list(folder.glob("*.gguf"))  # assembled copy removed

    bad = fake_chunked_wheels(tmp_path / "bad", gguf_file, "0" * 64)
    monkeypatch.syspath_prepend(str(tmp_path / "bad"))
    monkeypatch.setattr(loading, "KNOWN_MODELS", MappingProxyType({"tiny": bad}))
    with pytest.raises(MeloLoadError, match="expected 0000"):
        loading.load_model("tiny", progress=False)


def test_hub_name_offline_is_one_clear_error(monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    with pytest.raises(MeloLoadError, match="smollm2-135m-instruct.*hub failed"):
        loading.load_model("someone/some-model")
