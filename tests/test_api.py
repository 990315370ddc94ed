"""Where PEFT users reach: attributes forwarded to the base model, pipelines, disable_adapter(), the task
inferred from the model, the tokenizer required up front."""

import pytest
import torch
import transformers
from conftest import (
    EDIT_PROMPTS,
    MODEL_FACTORIES,
    MODEL_LAYERS,
    UNRELATED,
    edit_targets,
    make_word_tokenizer,
    melo_config,
)

import melo


def untasked(family, **overrides):
    """The family's MeloConfig without a task: the model tells it."""
    settings = {k: v for k, v in melo_config(family, **overrides).to_dict().items() if k != "task"}
    return melo.MeloConfig(**settings)


@pytest.mark.parametrize("family", sorted(MODEL_LAYERS))
def test_the_task_is_inferred_from_the_model_and_saved(family, word_tokenizer, tmp_path):
    model = melo.get_melo_model(MODEL_FACTORIES[family](), untasked(family), tokenizer=word_tokenizer)
    assert model.melo_config.task == model.task == MODEL_LAYERS[family]["task"]
    model.save_pretrained(tmp_path)
    loaded = melo.MeloModel.from_pretrained(MODEL_FACTORIES[family](), tmp_path, tokenizer=word_tokenizer)
    assert loaded.melo_config.task == MODEL_LAYERS[family]["task"]


def test_an_explicit_task_is_kept(word_tokenizer):
    with pytest.raises(melo.MeloConfigError, match="task 'regression' is not one of"):
        melo.MeloConfig(task="regression", target_modules=["a"], router_layer="b")
    config = melo_config("gpt2")
    assert melo.get_melo_model(MODEL_FACTORIES["gpt2"](), config, tokenizer=word_tokenizer).melo_config is config


def test_attributes_come_from_the_base_model(word_tokenizer):
    base = MODEL_FACTORIES["gpt2"]()
    model = melo.get_melo_model(base, melo_config("gpt2"), tokenizer=word_tokenizer)
    assert model.generation_config is base.generation_config
    assert model.main_input_name == "input_ids" and model.can_generate()
    assert model.get_input_embeddings() is base.get_input_embeddings()
    assert model.config is base.config
    assert type(model).generate is melo.MeloModel.generate  # MeloModel's own methods are not shadowed
    assert not hasattr(model, "no_such_attribute")
    with pytest.raises(AttributeError, match="no_such_attribute"):
        model.no_such_attribute  # noqa: B018


def test_a_pipeline_runs_the_edited_model(one_torch_thread):
    tokenizer = make_word_tokenizer()  # its own: the pipeline changes the tokenizer's padding side
    base = MODEL_FACTORIES["gpt2"]()
    model = melo.get_melo_model(base, melo_config("gpt2"), tokenizer=tokenizer)
    model.edit(EDIT_PROMPTS[:1], edit_targets("gpt2", base, tokenizer, EDIT_PROMPTS[:1]))
    generate = transformers.pipeline("text-generation", model=model, tokenizer=model.tokenizer)
    for prompt in (EDIT_PROMPTS[0], UNRELATED[0]):
        text = generate(prompt, max_new_tokens=2, do_sample=False)[0]["generated_text"]
        assert text[len(prompt):].strip() == model.generate_text([prompt], max_new_tokens=2)[0].strip()
    assert model.generate_text(EDIT_PROMPTS[:1], max_new_tokens=1) == ["rome"]


def test_disable_adapter_is_disabled(word_tokenizer):
    base = MODEL_FACTORIES["gpt2"]()
    model = melo.get_melo_model(base, melo_config("gpt2", num_iter=10), tokenizer=word_tokenizer)
    model.edit(EDIT_PROMPTS[:1], ["rome"])
    enc = word_tokenizer(EDIT_PROMPTS[:1], return_tensors="pt")
    with torch.no_grad():
        edited = model(**enc).logits
        with model.disable_adapter():
            off = model(**enc).logits
        plain = base(**enc).logits
    assert torch.equal(off, plain) and not torch.equal(edited, plain)


@pytest.mark.parametrize("method", ["grace", "lora", "ft"])
def test_baselines_need_the_tokenizer_too(method):
    from melo.baselines import make_baseline

    with pytest.raises(melo.MeloConfigError, match="needs the model's tokenizer"):
        make_baseline(method, MODEL_FACTORIES["gpt2"](), melo_config("gpt2"))
