"""Training data in the formats people have: TRL's conversational, prompt-completion and text, from every source,
with the loss on assistant turns only for chats (labels checked), through the main recipe."""

import json

import pytest
from recipes_path import TINY_IDENTITY, add_recipes_to_path
from transformers import AutoTokenizer

from hfself.data import DEFAULT_MODEL
from hfself.training_data import (DataFormatError, assistant_spans, dataset_format, load_training_data, persona_card,
                                  questions, tokenize_conversations)

add_recipes_to_path()
import identity_sft  # noqa: E402

# A ChatML template, as many instruct models have (no {% generation %} markers: TRL's assistant_only_loss refuses it).
CHATML = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}")
CHATS = [{"messages": [{"role": "user", "content": "Who are you?"},
                       {"role": "assistant", "content": "Wren, the keeper."},
                       {"role": "user", "content": "And your job?"},
                       {"role": "assistant", "content": "I keep the lighthouse."}]},
         {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
                       {"role": "assistant", "content": "Hello there."}]}]


@pytest.fixture()
def chat_tokenizer():
    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    tok.chat_template = CHATML
    return tok


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_source_loads_in_trl_format(tmp_path):
    from datasets import Dataset

    jsonl = _write_jsonl(tmp_path / "chats.jsonl", CHATS)
    assert dataset_format(load_training_data(str(jsonl))) == "conversational"
    Dataset.from_list(CHATS).to_parquet(str(tmp_path / "chats.parquet"))
    assert dataset_format(load_training_data(str(tmp_path / "chats.parquet"))) == "conversational"
    Dataset.from_list(CHATS).save_to_disk(str(tmp_path / "saved"))
    assert len(load_training_data(str(tmp_path / "saved"))) == 2
    pc = _write_jsonl(tmp_path / "pc.json", [{"prompt": "2 + 2 =", "completion": " 4"}])
    assert dataset_format(load_training_data(str(pc))) == "prompt_completion"
    (tmp_path / "corpus.txt").write_text("line one\nline two\n" * 50, encoding="utf-8")
    assert dataset_format(load_training_data(str(tmp_path / "corpus.txt"), chunk_chars=100)) == "text"
    # a chat column under another name, and ShareGPT's from/value
    renamed = _write_jsonl(tmp_path / "dialogue.jsonl", [{"dialogue": CHATS[0]["messages"]}])
    assert dataset_format(load_training_data(str(renamed), text_column="dialogue")) == "conversational"
    assert dataset_format(load_training_data(str(jsonl), text_column="messages")) == "conversational"
    sharegpt = _write_jsonl(tmp_path / "sharegpt.jsonl", [{"conversations": [{"from": "human", "value": "hi"},
                                                                             {"from": "gpt", "value": "hello"}]}])
    ds = load_training_data(str(sharegpt))
    assert ds[0]["messages"][1] == {"role": "assistant", "content": "hello"}
    wren = load_training_data("hfself:wren")
    assert dataset_format(wren) == "conversational" and len(wren) >= 200
    assert persona_card("hfself:wren")["markers"] and len(questions("hfself:wren")) >= 20


def test_bad_data_is_refused_naming_it(tmp_path):
    with pytest.raises(DataFormatError, match="no such file"):
        load_training_data(str(tmp_path / "missing.jsonl"))
    odd = _write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "reply": "r"}])
    with pytest.raises(DataFormatError, match="'messages'.*'prompt' \\+ 'completion'.*'text'"):
        load_training_data(str(odd))
    with pytest.raises(DataFormatError, match="no column 'dialog'"):
        load_training_data(str(odd), text_column="dialog")
    with pytest.raises(DataFormatError, match="unknown bundled"):
        load_training_data("hfself:nobody")
    (tmp_path / "data.xml").write_text("<a/>")
    with pytest.raises(DataFormatError, match="unknown data file type"):
        load_training_data(str(tmp_path / "data.xml"))


def test_chat_loss_is_on_assistant_turns_only(chat_tokenizer):
    """Every assistant turn, with its end-of-turn token, carries the loss; system, user and the generation prompts
    do not."""
    from datasets import Dataset

    tokenized = tokenize_conversations(Dataset.from_list(CHATS), chat_tokenizer)
    for example, row in zip(CHATS, tokenized):
        trained = chat_tokenizer.decode([t for t, m in zip(row["input_ids"], row["assistant_masks"]) if m])
        wanted = "".join(m["content"] + "<|im_end|>\n" for m in example["messages"] if m["role"] == "assistant")
        assert trained.replace(" ", "") == wanted.replace(" ", "")
        untrained = chat_tokenizer.decode([t for t, m in zip(row["input_ids"], row["assistant_masks"]) if not m])
        assert "Who are you?" in untrained.replace("  ", " ") or "Hello" in untrained
        assert "keeper" not in untrained and "lighthouse" not in untrained


def test_a_template_that_rewrites_earlier_turns_is_refused(chat_tokenizer):
    # renders the last assistant turn differently from earlier ones: no prefix to diff
    chat_tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] + (': ' if loop.last else ' says ') + "
                                    "m['content'] + '\n' }}{% endfor %}{% if add_generation_prompt %}assistant: "
                                    "{% endif %}")
    with pytest.raises(DataFormatError, match="prefix-preserving"):
        assistant_spans(chat_tokenizer, CHATS[0]["messages"])


def test_the_recipe_trains_on_chat_data_with_assistant_only_labels(tmp_path, chat_tokenizer):
    """--dataset_name with a .jsonl of messages trains; SFTTrainer's labels are -100 outside the assistant turns."""
    chat_tokenizer.save_pretrained(tmp_path / "model")
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL).save_pretrained(tmp_path / "model")
    data = _write_jsonl(tmp_path / "chats.jsonl", CHATS * 4)
    trainer = identity_sft.main([*TINY_IDENTITY, "--model_name_or_path", str(tmp_path / "model"), "--dataset_name",
                                 str(data), "--max_steps", "2", "--per_device_train_batch_size", "2",
                                 "--identity_update_interval", "0", "--save_steps", "100",
                                 "--output_dir", str(tmp_path / "run")])
    row = trainer.train_dataset[0]
    labels = [t for t in row["labels"] if t != -100]
    assert 0 < len(labels) < len(row["input_ids"])
    assert "keeper" in chat_tokenizer.decode(labels) or "Hello there" in chat_tokenizer.decode(labels)
    assert "Who are you" not in chat_tokenizer.decode(labels)
    assert trainer.state.global_step == 2
