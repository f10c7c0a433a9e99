"""dlbook.data.text: Tiny Shakespeare, the character vocabulary, the split and the windows."""

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from dlbook import data

TINYSHAKESPEARE_CHARS = 1_115_394


@pytest.fixture(scope="module")
def corpus():
    """Tiny Shakespeare: (text, the CharCorpus), loaded once for this module."""
    if not (SHARED_DATA / "tinyshakespeare.txt").exists():
        pytest.skip(f"the data sets are not in {SHARED_DATA}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLBOOK_DATA", str(SHARED_DATA))
        return data.load_text(), data.load_char_corpus()


def test_load_text(shared_data):
    text = data.load_text("tinyshakespeare")
    assert len(text) == TINYSHAKESPEARE_CHARS and text.startswith("First Citizen:\n")
    with pytest.raises(ValueError, match="tinyshakespeare"):
        data.load_text("wikitext")


# CharVocab --------------------------------------------------------------------

def test_vocab_is_the_sorted_characters_of_the_text():
    vocab = data.CharVocab("hello, world")
    assert vocab.chars == [" ", ",", "d", "e", "h", "l", "o", "r", "w"] and len(vocab) == 9
    ids = vocab.encode("hello")
    assert ids.dtype == torch.int64 and ids.tolist() == [4, 3, 5, 5, 6]
    assert vocab.decode(ids) == "hello" and vocab.decode([8, 6, 7, 5, 2]) == "world"
    assert vocab.decode(np.array([0, 1])) == " ," and vocab.decode([]) == ""
    assert vocab.encode("").shape == (0,)


def test_vocab_handles_characters_beyond_ascii():
    vocab = data.CharVocab("naïve ζ😀")
    assert vocab.decode(vocab.encode("ζ😀 ï")) == "ζ😀 ï"


def test_encoding_an_unknown_character_names_it():
    vocab = data.CharVocab("abc")
    for text, char, position in (("abz", "'z'", 2), ("é", r"U\+00E9", 0), ("a\U0001F600", r"U\+1F600", 1)):
        with pytest.raises(ValueError, match=f"{char}.*position {position}.*vocabulary of 3"):
            vocab.encode(text)


@pytest.mark.parametrize("ids, match", [
    ([3], "outside"), ([-1], "outside"), (torch.tensor([[0, 1]]), "1-D"), (torch.tensor([0.0]), "1-D"),
    ([0.0], "integer"), ([True], "integer"),
])
def test_decoding_bad_ids_is_a_clear_error(ids, match):
    with pytest.raises(ValueError, match=match):
        data.CharVocab("abc").decode(ids)


@pytest.mark.parametrize("text", ["", None, ["a", "b"]])
def test_vocab_needs_a_non_empty_string(text):
    with pytest.raises(ValueError, match="non-empty string"):
        data.CharVocab(text)


def test_vocab_fingerprint_and_repr():
    a, b = data.CharVocab("abc"), data.CharVocab("cab")
    assert a.fingerprint() == b.fingerprint() != data.CharVocab("abd").fingerprint()
    assert repr(a) == "CharVocab(3 characters: 'abc')"


# The split and the corpus -----------------------------------------------------

def test_train_val_split_is_the_first_90_percent_and_the_rest():
    train, val = data.train_val_split("abcdefghijk")  # 11 characters
    assert (train, val) == ("abcdefghi", "jk")
    ids = torch.arange(100)
    train, val = data.train_val_split(ids)
    assert torch.equal(train, ids[:90]) and torch.equal(val, ids[90:])


def test_tinyshakespeare_corpus(corpus):
    text, (vocab, train, val) = corpus
    assert len(vocab) == 65 and vocab.chars == sorted(set(text))
    assert len(train) == 1_003_854 and len(val) == 111_540  # int(0.9 * 1,115,394), as nanoGPT
    assert train.dtype == val.dtype == torch.int64
    assert vocab.decode(torch.cat([train, val])) == text


# RandomWindows ----------------------------------------------------------------

def _take(iterable, k):
    it = iter(iterable)
    return [next(it) for _ in range(k)]


def test_random_windows_are_windows_of_the_text_and_their_next_characters():
    ids = torch.arange(40)  # a window of this text is a run of consecutive numbers
    windows = data.RandomWindows(ids, T=6, batch_size=5)
    torch.manual_seed(0)
    starts = []
    for x, y in _take(windows, 200):
        assert x.shape == y.shape == (5, 6) and x.dtype == y.dtype == torch.int64
        assert torch.equal(x, x[:, :1] + torch.arange(6))
        assert torch.equal(y, x + 1)  # y[b, t] = the character after x[b, t]
        starts += x[:, 0].tolist()
    assert sorted(set(starts)) == list(range(40 - 6))  # every start occurs, none runs off the end


def test_random_windows_have_no_length_and_never_end():
    windows = data.RandomWindows(torch.arange(10), T=3, batch_size=2)
    with pytest.raises(TypeError):
        len(windows)
    assert len(_take(windows, 1000)) == 1000


def test_random_windows_draw_from_the_global_generator_while_iterating():
    windows = data.RandomWindows(torch.arange(1000), T=8, batch_size=4)
    torch.manual_seed(0)
    stream = _take(windows, 8)
    torch.manual_seed(0)
    resumed = iter(windows)
    for _ in range(3):  # a restarted loop restores the RNG state and skips the batches it had seen
        next(resumed)
    for expected in stream[3:]:
        got = next(resumed)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    it = iter(windows)  # nothing is drawn before the first batch is asked for
    torch.manual_seed(0)
    assert torch.equal(next(it)[0], stream[0][0])
    torch.manual_seed(1)
    assert not torch.equal(next(iter(windows))[0], stream[0][0])


def test_random_windows_fingerprint():
    ids = torch.arange(50)
    base = data.RandomWindows(ids, T=4, batch_size=3).fingerprint()
    assert base == data.RandomWindows(ids.clone(), T=4, batch_size=3).fingerprint() and "0x" not in base
    others = {data.RandomWindows(ids, T=5, batch_size=3).fingerprint(),
              data.RandomWindows(ids, T=4, batch_size=2).fingerprint(),
              data.RandomWindows(ids + 1, T=4, batch_size=3).fingerprint()}
    assert len(others) == 3 and base not in others


# validation_windows -----------------------------------------------------------

def test_validation_windows_are_all_non_overlapping_windows_in_order():
    loader = data.validation_windows(torch.arange(23), T=5, batch_size=3)
    assert isinstance(loader, data.BatchLoader) and not loader.shuffle and len(loader) == 2
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    assert torch.equal(x, torch.arange(20).view(4, 5))  # (23 - 1) // 5 = 4 windows
    assert torch.equal(y, x + 1)
    one = data.validation_windows(torch.arange(6), T=5, batch_size=8)  # exactly T + 1 characters
    assert [b[1].tolist() for b in one] == [[[1, 2, 3, 4, 5]]]


def test_validation_windows_of_tinyshakespeare(corpus):
    _, (_, _, val) = corpus
    loader = data.validation_windows(val, T=256, batch_size=64)
    assert sum(len(b[0]) for b in loader) == (111_540 - 1) // 256
    assert loader.fingerprint() == data.validation_windows(val, T=256, batch_size=64).fingerprint()


@pytest.mark.parametrize("make", [data.RandomWindows, data.validation_windows])
@pytest.mark.parametrize("ids, kwargs, match", [
    (torch.arange(10), dict(T=0, batch_size=2), "T"),
    (torch.arange(10), dict(T=-3, batch_size=2), "T"),
    (torch.arange(10), dict(T=2.0, batch_size=2), "T"),
    (torch.arange(10), dict(T=3, batch_size=0), "batch_size"),
    (torch.arange(10), dict(T=3, batch_size=True), "batch_size"),
    (torch.arange(10), dict(T=10, batch_size=2), "T=10 is longer.*11.*has 10"),
    (torch.arange(10, dtype=torch.int32), dict(T=3, batch_size=2), "int64"),
    (torch.arange(10).view(2, 5), dict(T=3, batch_size=2), "1-D"),
    ("some text", dict(T=3, batch_size=2), "1-D"),
])
def test_windows_reject_bad_arguments(make, ids, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(ids, **kwargs)


def test_windows_accept_numpy_integers():
    windows = data.RandomWindows(torch.arange(10), T=np.int64(3), batch_size=np.int32(2))
    assert next(iter(windows))[0].shape == (2, 3)


@pytest.mark.parametrize("seq", [["a", "b"], torch.zeros(2, 5), None])
def test_train_val_split_rejects_other_things(seq):
    with pytest.raises(ValueError, match="string or a 1-D tensor"):
        data.train_val_split(seq)
