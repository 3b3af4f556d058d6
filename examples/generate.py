"""Writes the sample datasets in this folder (deterministic: the same files every time).

    python examples/generate.py

- reviews.csv: 200 short product reviews with a header row `text,label` (positive / negative), a text
  classification task small models learn in a few hundred steps.
- chat.jsonl: 50 conversations in the `messages` format chat tools use ([{role, content}, ...]).
- instructions.jsonl: 50 Alpaca-style rows {instruction, input, output}; train causal-LM runs on them with
  columns prompt = instruction, response = output.
Every answer in the last two is computed, so each one is right.
"""
import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

PRODUCTS = ["kettle", "backpack", "desk lamp", "phone case", "blender", "headphones", "rain jacket", "keyboard",
            "water bottle", "office chair", "toaster", "tent", "running shoes", "coffee grinder", "monitor stand",
            "umbrella", "frying pan", "power bank", "bike light", "notebook"]
GOOD = ["works perfectly", "is sturdy and well made", "arrived quickly and looks great", "exceeded my expectations",
        "is worth every penny", "feels solid and reliable", "is exactly as described", "has held up for months",
        "is comfortable and light", "does the job brilliantly"]
BAD = ["stopped working after a week", "feels cheap and flimsy", "arrived broken", "is a waste of money",
       "is nothing like the photos", "broke the second time I used it", "is noisy and slow",
       "fell apart within days", "is uncomfortable and heavy", "does not do what it promises"]
GOOD_END = ["Would buy again.", "Highly recommended.", "Five stars from me.", "Very happy with it.", "Great value."]
BAD_END = ["Returning it.", "Avoid.", "One star.", "Very disappointed.", "Not worth it."]
OPENERS = ["This", "The", "My new", "Our", "This little"]


def reviews(n: int = 200, seed: int = 14) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        text = (f"{rng.choice(OPENERS)} {rng.choice(PRODUCTS)} {rng.choice(GOOD if positive else BAD)}. "
                f"{rng.choice(GOOD_END if positive else BAD_END)}")
        rows.append({"text": text, "label": "positive" if positive else "negative"})
    return rows


CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Canada": "Ottawa", "Peru": "Lima",
            "Norway": "Oslo", "Egypt": "Cairo", "Chile": "Santiago", "Poland": "Warsaw", "Vietnam": "Hanoi"}
SYSTEM = "You are a concise assistant. Answer in one sentence."


def chats(n: int = 50, seed: int = 14) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            turns = [(f"What is {a} times {b}?", f"{a} times {b} is {a * b}.")]
        elif kind == 1:
            country = rng.choice(sorted(CAPITALS))
            turns = [(f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."),
                     ("And how many letters does that name have?",
                      f"{CAPITALS[country]} has {len(CAPITALS[country])} letters.")]
        else:
            metres = rng.randint(1, 40)
            turns = [(f"How many centimetres are in {metres} metres?", f"{metres} metres are {metres * 100} centimetres.")]
        messages = [{"role": "system", "content": SYSTEM}]
        for question, answer in turns:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        rows.append({"messages": messages})
    return rows


WORDS = ["river", "lantern", "orbit", "meadow", "copper", "harbor", "velvet", "signal", "pepper", "glacier"]


def instructions(n: int = 50, seed: int = 14) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = i % 5
        words = rng.sample(WORDS, rng.randint(3, 5))
        if kind == 0:
            rows.append({"instruction": "Sort these words alphabetically.", "input": ", ".join(words),
                         "output": ", ".join(sorted(words))})
        elif kind == 1:
            word = rng.choice(WORDS)
            rows.append({"instruction": "Write the word backwards.", "input": word, "output": word[::-1]})
        elif kind == 2:
            numbers = [rng.randint(1, 99) for _ in range(rng.randint(3, 6))]
            rows.append({"instruction": "Add up these numbers.", "input": " ".join(map(str, numbers)),
                         "output": str(sum(numbers))})
        elif kind == 3:
            rows.append({"instruction": "Count the words.", "input": " ".join(words), "output": str(len(words))})
        else:
            rows.append({"instruction": "Write the words in upper case.", "input": " ".join(words),
                         "output": " ".join(words).upper()})
    return rows


def write_all(folder: Path = HERE) -> None:
    with open(folder / "reviews.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(reviews())
    for name, rows in (("chat.jsonl", chats()), ("instructions.jsonl", instructions())):
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


if __name__ == "__main__":
    write_all()
