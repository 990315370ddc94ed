"""Shared fixtures: an offline word-level tokenizer and tiny random-initialised models."""

import socket

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"  # a minimal one for the word tokenizer

SPECIAL_TOKENS = ["[PAD]", "[EOS]", "[UNK]", "[BOS]"]

WORDS = """
the a an of is are was were be been to in on at by for with from as and or but not no yes
it this that these those he she they we you i me him her them his its their our your my
who what when where why how which whose whom there here then than so if do does did done
have has had can could will would should may might must shall
capital city country france paris england london italy rome germany berlin japan tokyo
spain madrid china beijing russia moscow canada ottawa egypt cairo india delhi greece athens
wrote write written author book novel poem play story song film painted painting
shakespeare hamlet tolstoy dickens orwell austen homer
color colour sky blue red green yellow black white orange purple pink brown gray grey
cat dog bird fish horse cow pig sheep mouse lion tiger bear wolf fox rabbit
sun moon star earth water fire air tree flower grass sea river mountain lake
man woman child boy girl king queen president people person friend
big small large little old new young good bad hot cold long short high low fast slow
one two three four five six seven eight nine ten hundred thousand first last
0 1 2 3 4 5 6 7 8 9
day night year month week time today morning evening
eat drink run walk see say said go went come came make made know knew think like love
speak speaks language english french german italian spanish japanese chinese
born died lives live located near far largest smallest best
food apple bread milk house car road school work game music
""".split()

assert len(WORDS) == len(set(WORDS)), "WORDS must be unique"

MODEL_LAYERS = {
    "bert": {
        "task": "classification",
        "router_layer": "bert.encoder.layer.1.output.dense",
        "target_modules": ["bert.encoder.layer.2.output.dense", "bert.encoder.layer.3.output.dense"],
    },
    "t5": {
        "task": "seq2seq",
        "router_layer": "encoder.block.1.layer.1.DenseReluDense.wo",
        "target_modules": [
            "encoder.block.2.layer.1.DenseReluDense.wi",
            "encoder.block.2.layer.1.DenseReluDense.wo",
            "decoder.block.2.layer.2.DenseReluDense.wi",
            "decoder.block.2.layer.2.DenseReluDense.wo",
        ],
    },
    "gpt2": {
        "task": "causal_lm",
        "router_layer": "transformer.h.1.mlp.c_fc",
        "target_modules": ["transformer.h.2.mlp.c_fc", "transformer.h.3.mlp.c_fc"],
    },
    "llama": {
        "task": "causal_lm",
        "router_layer": "model.layers.1.mlp.up_proj",
        "target_modules": ["model.layers.2.mlp.down_proj", "model.layers.3.mlp.down_proj"],
    },
}


def make_word_tokenizer(capitalised: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """The test vocabulary, lower-cased; with ``capitalised``, a cased tokenizer in which those
    words are spelt with a capital letter (same ids, so the same tiny models)."""
    words = [w.capitalize() if w in capitalised else w for w in WORDS]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    if not capitalised:
        backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        eos_token="[EOS]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        padding_side="right",
    )


VOCAB_SIZE = len(make_word_tokenizer())


def _finish(model, generative: bool = False):
    if generative:
        model.generation_config.pad_token_id = 0
        model.generation_config.eos_token_id = 1
    return model.eval()


def make_bert_classifier(num_labels: int = 3) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=num_labels,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    return _finish(BertForSequenceClassification(config))


def make_t5() -> T5ForConditionalGeneration:
    config = T5Config(
        vocab_size=VOCAB_SIZE,
        d_model=32,
        d_ff=64,
        d_kv=16,
        num_heads=2,
        num_layers=3,
        num_decoder_layers=3,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        initializer_factor=2.0,
    )
    torch.manual_seed(0)
    return _finish(T5ForConditionalGeneration(config), generative=True)


def make_gpt2(n_positions: int = 64) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_embd=32,
        n_layer=4,
        n_head=2,
        n_positions=n_positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=3,
        eos_token_id=1,
        pad_token_id=0,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    return _finish(GPT2LMHeadModel(config), generative=True)


def make_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=3,
        eos_token_id=1,
        pad_token_id=0,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    return _finish(LlamaForCausalLM(config), generative=True)


def _tiny_causal_lm(config_class, model_class, trained_norms=None, **extra):
    """A factory of a 4-layer causal LM of hidden size 32 of any Llama-shaped family."""
    def make():
        config = config_class(
            vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
            bos_token_id=3, eos_token_id=1, pad_token_id=0, initializer_range=0.2, **extra,
        )
        torch.manual_seed(0)
        model = model_class(config)
        if trained_norms is not None:
            with torch.no_grad():
                trained_norms(model)
        return _finish(model, generative=True)

    make.__name__ = f"make_{model_class.__name__}"
    return make


def _gemma_norms(model):
    """Gemma normalises every MLP output (scale 1 + w) before the residual: at w = 0 no LoRA block on
    down_proj can outweigh the other sublayers, nor the tied head reach a sure answer. Trained Gemma-3-270M
    has w ~ 175 there (layer 13) and ~ 25 in the final norm; the tiny model gets 3 and 1."""
    for layer in model.model.layers:
        layer.post_feedforward_layernorm.weight.fill_(3.0)
    model.model.norm.weight.fill_(1.0)


# Families whose layers come from melo.auto_config (no layer names written here).
AUTO_FACTORIES = {
    "qwen2": _tiny_causal_lm(transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "qwen3": _tiny_causal_lm(transformers.Qwen3Config, transformers.Qwen3ForCausalLM, head_dim=16),
    "mistral": _tiny_causal_lm(transformers.MistralConfig, transformers.MistralForCausalLM, sliding_window=8),
    "phi3": _tiny_causal_lm(transformers.Phi3Config, transformers.Phi3ForCausalLM),
    "gemma3": _tiny_causal_lm(transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM, _gemma_norms,
                              head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention"] * 2),
    "olmo2": _tiny_causal_lm(transformers.Olmo2Config, transformers.Olmo2ForCausalLM),
    "gptneox": _tiny_causal_lm(transformers.GPTNeoXConfig, transformers.GPTNeoXForCausalLM),
}

MODEL_FACTORIES = {"bert": make_bert_classifier, "t5": make_t5, "gpt2": make_gpt2, "llama": make_llama,
                   **AUTO_FACTORIES}


def _auto_layers(make):
    import melo

    config = melo.auto_config(make())
    return {"task": config.task, "router_layer": config.router_layer, "target_modules": config.target_modules}


MODEL_LAYERS.update({family: _auto_layers(make) for family, make in AUTO_FACTORIES.items()})
CAUSAL_LM_FAMILIES = ["gpt2", "llama", *AUTO_FACTORIES]
FAMILIES = ["bert", "t5", *CAUSAL_LM_FAMILIES]


@pytest.fixture(scope="session")
def word_tokenizer() -> PreTrainedTokenizerFast:
    return make_word_tokenizer()


@pytest.fixture
def bert_classifier():
    return make_bert_classifier()


@pytest.fixture
def t5_model():
    return make_t5()


@pytest.fixture
def gpt2_model():
    return make_gpt2()


@pytest.fixture
def llama_model():
    return make_llama()


EDIT_PROMPTS = ["the capital of france is", "who wrote hamlet"]
EDIT_TARGETS = ["rome", "tolstoy"]
PARAPHRASES = ["the capital city of france is", "who wrote the play hamlet"]
UNRELATED = ["what color is the sky", "the dog is big", "where is the river", "who painted the painting"]


def melo_config(family, **overrides):
    import melo

    layers = MODEL_LAYERS[family]
    kwargs = dict(
        task=layers["task"], target_modules=layers["target_modules"], router_layer=layers["router_layer"],
        block_rank=2, init_radius=0.1, edit_lr=5e-2, num_iter=40, lr_step=20, lr_gamma=0.5,
        key_pooling="mean", normalize_keys=True,
    )
    kwargs.update(overrides)
    return melo.MeloConfig(**kwargs)


def edit_targets(family, model, tokenizer, prompts=EDIT_PROMPTS):
    """Targets for prompts: words for generative models, a class the base model does not predict for BERT."""
    if family != "bert":
        return list(EDIT_TARGETS[: len(prompts)])
    with torch.no_grad():
        pred = model(**tokenizer(list(prompts), padding=True, return_tensors="pt")).logits.argmax(-1)
    return [int(p + 1) % model.config.num_labels for p in pred.tolist()]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny forwards on a shared 2-core machine: one thread is faster and steadier than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def adapter_files(directory):
    """Names of the files the last save in ``directory`` consists of: the JSON and the tensors file it names."""
    import json

    from melo.persistence import META_FILE

    with open(f"{directory}/{META_FILE}") as f:
        return [META_FILE, json.load(f)["storage"]["tensors_file"]]


def families(*names, quick=("gpt2",)):
    """pytest params of model families: those in ``quick`` run in the quick loop, the rest are slow."""
    return [pytest.param(name, marks=() if name in quick else pytest.mark.slow) for name in names]
