"""A second text-classification set for checking learning-rate presets beyond AG News: synthetic
product reviews, generated with a fixed seed, that a bag of words cannot solve.

Each review strings together clauses about aspects of a product. A clause's polarity comes from its
adjective, flipped by a negation ("not great", "never disappointing"); with a contrast ("…, but …")
the last clause decides, as a reader would. Label: the review's overall sentiment (pos / neg). The
same words appear in both classes, so a model has to read order and negation.
"""
import csv
import io
import random

ASPECTS = ["the battery", "the screen", "the price", "the delivery", "the sound", "the build", "the camera",
           "the support team", "the software", "the design", "the keyboard", "the manual"]
POSITIVE = ["great", "excellent", "reliable", "impressive", "solid", "pleasant", "fantastic", "sturdy"]
NEGATIVE = ["awful", "disappointing", "flimsy", "terrible", "annoying", "poor", "useless", "sluggish"]
NEGATIONS = ["not", "never", "hardly"]
FILLERS = ["honestly", "to be fair", "after a week", "overall", "in my experience", "as expected"]


def clause(rng: random.Random) -> tuple[str, bool]:
    """(text, is it positive?) — negation flips the adjective's polarity."""
    positive = rng.random() < 0.5
    adjective = rng.choice(POSITIVE if positive else NEGATIVE)
    if rng.random() < 0.35:
        return f"{rng.choice(ASPECTS)} is {rng.choice(NEGATIONS)} {adjective}", not positive
    return f"{rng.choice(ASPECTS)} is {adjective}", positive


def review(rng: random.Random) -> tuple[str, str]:
    first, first_pos = clause(rng)
    if rng.random() < 0.5:  # a contrast: the clause after "but" is the verdict
        second, second_pos = clause(rng)
        while second_pos == first_pos:
            second, second_pos = clause(rng)
        text, positive = f"{first}, but {second}", second_pos
    else:
        text, positive = first, first_pos
        if rng.random() < 0.5:  # an agreeing second clause
            extra, extra_pos = clause(rng)
            while extra_pos != positive:
                extra, extra_pos = clause(rng)
            text = f"{text} and {extra}"
    if rng.random() < 0.4:
        text = f"{rng.choice(FILLERS)}, {text}"
    return text[0].upper() + text[1:] + ".", "pos" if positive else "neg"


def sentiment_csv(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    for _ in range(n):
        writer.writerow(review(rng))
    return out.getvalue().encode()
