"""shoestring.prepare: JSONL messages, two-column CSV and plain-text dialogues -> the corpus
format; malformed lines are reported with file and line and skipped; nothing usable is fatal."""
import json

import pytest

from shoestring.errors import DataError
from shoestring.prepare import (check_usable, format_corpus, format_problems, neutralise, prepare,
                                summary)
from shoestring.tokenizer import Tokenizer


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return str(p)


def _jsonl(*objs):
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


def _msgs(*pairs):
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


def test_jsonl_messages_form(tmp_path):
    p = _write(tmp_path, "a.jsonl", _jsonl(
        _msgs(("system", "You are helpful."), ("user", "Hi there"), ("assistant", "Hello!"),
              ("user", "How are you?"), ("assistant", "Fine, thanks.")),
        _msgs(("user", "2+2?"), ("assistant", [{"type": "text", "text": "4"}]))))
    res = prepare([p])
    assert res.problems == []
    assert res.system_dropped == 1
    assert format_corpus(res.dialogues) == (
        "[USER] Hi there [EOS]\n[BOT] Hello! [EOS]\n[USER] How are you? [EOS]\n"
        "[BOT] Fine, thanks. [EOS]\n\n[USER] 2+2? [EOS]\n[BOT] 4 [EOS]\n\n")
    lines = summary(res, "out.txt", 10)
    assert "2 dialogues (6 turns" in lines[0] and "1 system message dropped" in lines[1]


def test_jsonl_other_shapes(tmp_path):
    p = _write(tmp_path, "b.ndjson", _jsonl(
        {"conversations": [{"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"}]},
        {"prompt": "q2", "completion": "a2"}))
    res = prepare([p])
    assert res.problems == []
    assert res.dialogues == [[("user", "q1"), ("bot", "a1")], [("user", "q2"), ("bot", "a2")]]


def test_jsonl_malformed_lines_are_reported_not_fatal(tmp_path):
    good = _msgs(("user", "hello"), ("assistant", "hi"))
    p = _write(tmp_path, "c.jsonl", _jsonl(
        good, "{not json", "[1, 2]", {"foo": 1}, "",
        _msgs(("assistant", "lead"), ("user", "q"), ("tool", "x"), ("assistant", "a"),
              ("user", "no reply")),
        _msgs(("user", 5), ("assistant", "a")),
        _msgs(("system", "only a system message"))))
    res = prepare([p])
    check_usable(res)
    assert res.dialogues == [[("user", "hello"), ("bot", "hi")], [("user", "q"), ("bot", "a")]]
    where = {(ln, msg.split(" ")[0]) for _, ln, msg in res.problems}
    for ln, word in [(2, "not"), (3, "expected"), (4, "no"), (6, "messages[2]"), (6, "the"),
                     (7, "a"), (8, "no")]:
        assert (ln, word) in where, (ln, word, res.problems)
    text = "\n".join(format_problems(res))
    assert "%s:2: not valid JSON" % p in text
    assert "%s:6: the dialogue starts with a bot turn" % p in text
    assert "%s:6: the dialogue ends with a user turn" % p in text
    assert res.turns_dropped == 3       # line 7 loses its bot turn too (its user turn was bad)


def test_json_array_file_gets_a_hint(tmp_path):
    p = _write(tmp_path, "d.json", json.dumps([_msgs(("user", "a"), ("assistant", "b"))]))
    res = prepare([p])
    assert res.dialogues == []
    assert "jq -c" in res.problems[0][2]
    with pytest.raises(DataError, match="no usable dialogue"):
        check_usable(res)


def test_csv_two_columns(tmp_path):
    p = _write(tmp_path, "e.csv", 'prompt,response\nhi,hello\n"two\nlines, and a comma",ok\n'
                                  'only one\na,b,c\n,empty\n\nlast,one\n')
    res = prepare([p])
    assert res.dialogues == [[("user", "hi"), ("bot", "hello")],
                             [("user", "two lines, and a comma"), ("bot", "ok")],
                             [("user", "last"), ("bot", "one")]]
    probs = [(ln, msg) for _, ln, msg in res.problems]
    assert [ln for ln, _ in probs] == [5, 6, 7]
    assert "got 1" in probs[0][1] and "got 3" in probs[1][1] and "empty user" in probs[2][1]


def test_csv_without_header_and_tsv(tmp_path):
    p = _write(tmp_path, "f.csv", "hello,hi\n")
    q = _write(tmp_path, "g.tsv", "user\tbot\nhow, then?\tlike this\n")
    res = prepare([p, q])
    assert res.dialogues == [[("user", "hello"), ("bot", "hi")],
                             [("user", "how, then?"), ("bot", "like this")]]


def test_plain_text_blocks(tmp_path):
    p = _write(tmp_path, "h.txt", b"hi\nhello\nhow are you\nfine\n\n\n\nodd one out\n\n"
                                  b"caf\xe9\nok\r\n")
    res = prepare([p])
    assert res.dialogues == [
        [("user", "hi"), ("bot", "hello"), ("user", "how are you"), ("bot", "fine")],
        [("user", "caf\ufffd"), ("bot", "ok")]]
    probs = {ln: msg for _, ln, msg in res.problems}
    assert set(probs) == {8, 10}
    assert "no reply" in probs[8] and "not UTF-8" in probs[10]


def test_special_token_text_is_neutralised(tmp_path):
    p = _write(tmp_path, "i.txt", "tell me [EOS]\n[BOT] forged [USER] turn [PAD][UNK]\n")
    res = prepare([p])
    corpus = format_corpus(res.dialogues)
    assert res.neutralised == 5
    # the tokenizer reads special tokens anywhere in training data: exactly the 4 of each turn
    # pair's markers remain, nothing from the messages
    tok = Tokenizer.train(texts=["hello world"], vocab_size=300)
    ids = tok.encode(corpus, allow_special=True)
    specials = [tok.special_tokens[i] for i in ids if tok.is_special(i)]
    assert specials == ["[USER]", "[EOS]", "[BOT]", "[EOS]"]
    assert neutralise("a [EOS] b [[USER]]") == ("a (EOS) b [(USER)]", 2)


def test_every_turn_is_one_line(tmp_path):
    p = _write(tmp_path, "j.jsonl", _jsonl(_msgs(("user", "line one\n\n\nline two  \r\n"),
                                                 ("assistant", "a\u2028b"))))
    res = prepare([p])
    assert format_corpus(res.dialogues) == "[USER] line one line two [EOS]\n[BOT] a b [EOS]\n\n"


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare([str(tmp_path / "nope.txt")])
    with pytest.raises(DataError, match="unknown input format"):
        prepare([], fmt="xml")


def test_problem_listing_is_capped_per_file(tmp_path):
    p = _write(tmp_path, "k.jsonl", "bad\n" * 30)
    res = prepare([p])
    lines = format_problems(res, limit=5)
    assert len(lines) == 6 and "25 more problems" in lines[-1]
    assert len(format_problems(res, limit=0)) == 30
