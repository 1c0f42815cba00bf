#!/usr/bin/env python3
"""make_corpus.py: generate shoestring/data/chat.txt, the small chat corpus shipped in the package.

Contract: `python tools/make_corpus.py --out shoestring/data/chat.txt` writes the same bytes on
every machine and every Python 3 version (own 64-bit RNG, no hash-ordered iteration, "\n" line
ends). The output follows MODEL.md §4: dialogues of alternating `[USER] ... [EOS]` /
`[BOT] ... [EOS]` lines starting with [USER], separated by one blank line, ending with "\n".

What is in it: every line is original text written for shoestring (CC0). Facts come from small
tables below (colours, animal sounds and legs, opposites, days, months, numbers, sums, capitals,
what objects are for, spelling) and are put into many paraphrased question templates and a few
answer templates, so a tiny model learns the pattern rather than one string. Dialogues mix a
greeting, 1 to 4 topics (with "and X?" follow-ups that refer back to the previous question),
context the bot must remember (the user's name, today's day, how the user feels) and a
farewell. Tables are dealt from shuffled decks so every fact appears about equally often.
"""
import argparse
import os
import sys

SEED = 20240611
N_DIALOGUES = 800
SPECIALS = ("[USER]", "[BOT]", "[EOS]", "[PAD]", "[UNK]")


# ----------------------------------------------------------------------------------------------
# A deterministic RNG (splitmix64): random.Random would do today, but this one cannot change.

class Rng:
    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def next64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def below(self, n):
        """A uniform integer in [0, n) (rejection sampling, no modulo bias)."""
        if n <= 0:
            raise ValueError("below(n) needs n >= 1")
        limit = (1 << 64) - ((1 << 64) % n)
        while True:
            r = self.next64()
            if r < limit:
                return r % n

    def chance(self, p):
        """True with probability p (p in [0, 1], resolution 1e-6)."""
        return self.below(1000000) < int(round(p * 1000000))

    def choice(self, seq):
        return seq[self.below(len(seq))]

    def shuffle(self, seq):
        for i in range(len(seq) - 1, 0, -1):
            j = self.below(i + 1)
            seq[i], seq[j] = seq[j], seq[i]

    def weighted(self, pairs):
        """Pick the item of a list of (weight, item) with probability proportional to weight."""
        total = sum(w for w, _ in pairs)
        r = self.below(total)
        for w, item in pairs:
            if r < w:
                return item
            r -= w
        raise AssertionError("unreachable")


class Deck:
    """Deals the items of a table in shuffled order, reshuffling when empty: even coverage."""

    def __init__(self, rng, items):
        self.rng, self.items, self.pile = rng, list(items), []

    def deal(self):
        if not self.pile:
            self.pile = list(self.items)
            self.rng.shuffle(self.pile)
        return self.pile.pop()


def cap(s):
    return s[:1].upper() + s[1:]


# ----------------------------------------------------------------------------------------------
# Fact tables. Keep them true; keep words short and common.

COLOURS = [  # (thing, colour): only things with one usual colour
    ("the sky", "blue"), ("grass", "green"), ("snow", "white"), ("coal", "black"),
    ("a banana", "yellow"), ("a strawberry", "red"), ("a carrot", "orange"), ("a lemon", "yellow"),
    ("milk", "white"), ("a tomato", "red"), ("chocolate", "brown"), ("a pumpkin", "orange"),
    ("the sea", "blue"), ("a crow", "black"), ("a polar bear", "white"), ("an orange", "orange"),
    ("a cherry", "red"), ("a plum", "purple"), ("a flamingo", "pink"), ("salt", "white"),
    ("a leaf", "green"), ("blood", "red"), ("an elephant", "grey"), ("a blueberry", "blue"),
    ("a pig", "pink"), ("a frog", "green"),
]
MULTI_COLOURS = [("a zebra", "black and white"), ("a panda", "black and white"),
                 ("a tiger", "orange and black")]
COLOUR_WORDS = ["red", "blue", "green", "yellow", "white", "black", "orange", "pink", "purple",
                "brown", "grey"]

SOUNDS = [  # (animal, sound)
    ("a cow", "moo"), ("a dog", "woof"), ("a cat", "meow"), ("a sheep", "baa"),
    ("a duck", "quack"), ("a pig", "oink"), ("a horse", "neigh"), ("an owl", "hoot"),
    ("a frog", "ribbit"), ("a lion", "roar"), ("a snake", "hiss"), ("a mouse", "squeak"),
    ("a bee", "buzz"), ("a rooster", "cock-a-doodle-doo"), ("a donkey", "hee-haw"),
    ("a crow", "caw"),
]

LEGS = [  # (animal, number of legs as a word)
    ("a dog", "four"), ("a cat", "four"), ("a horse", "four"), ("a cow", "four"),
    ("a spider", "eight"), ("a chicken", "two"), ("a duck", "two"), ("an ant", "six"),
    ("a bee", "six"), ("a lizard", "four"), ("a frog", "four"), ("an elephant", "four"),
    ("a penguin", "two"), ("a person", "two"), ("a sheep", "four"), ("a fish", "no"),
    ("a snake", "no"), ("an owl", "two"),
]

ABILITIES = [  # (animal, verb, can it?) only clear cases
    ("a fish", "swim", True), ("a fish", "fly", False), ("a fish", "walk", False),
    ("a bird", "fly", True), ("a duck", "swim", True), ("a duck", "fly", True),
    ("a dog", "swim", True), ("a dog", "fly", False), ("a dog", "run", True),
    ("a cow", "fly", False), ("a horse", "run", True), ("a horse", "fly", False),
    ("a penguin", "fly", False), ("a penguin", "swim", True), ("an eagle", "fly", True),
    ("a snake", "walk", False), ("a snake", "fly", False), ("a frog", "jump", True),
    ("a frog", "fly", False), ("a kangaroo", "jump", True), ("a kangaroo", "fly", False),
    ("a monkey", "climb", True), ("a monkey", "fly", False), ("a bat", "fly", True),
    ("a cat", "climb", True), ("a cat", "fly", False), ("a pig", "fly", False),
    ("a rabbit", "jump", True), ("a whale", "swim", True), ("a whale", "walk", False),
]
ABILITY_ALT = {  # what the animal does instead, for "No, ..." answers
    "a fish": "swim", "a dog": "run", "a cow": "walk", "a horse": "run", "a penguin": "swim",
    "a snake": "slither", "a frog": "jump", "a kangaroo": "jump", "a monkey": "climb",
    "a cat": "climb", "a pig": "run", "a whale": "swim",
}

PROPERTIES = [  # (thing, true property, opposite): for "is X Y?" yes/no questions
    ("ice", "cold", "hot"), ("fire", "hot", "cold"), ("the sun", "hot", "cold"),
    ("a feather", "light", "heavy"), ("a rock", "hard", "soft"), ("a pillow", "soft", "hard"),
    ("sugar", "sweet", "sour"), ("a lemon", "sour", "sweet"), ("snow", "cold", "hot"),
    ("an elephant", "big", "small"), ("a mouse", "small", "big"), ("a snail", "slow", "fast"),
    ("a cheetah", "fast", "slow"), ("the sea", "wet", "dry"), ("a desert", "dry", "wet"),
    ("a giraffe", "tall", "short"), ("a whale", "big", "small"), ("honey", "sweet", "sour"),
]

OPPOSITES_BOTH = [  # asked in both directions
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
    ("day", "night"), ("open", "closed"), ("wet", "dry"), ("full", "empty"), ("early", "late"),
    ("good", "bad"), ("loud", "quiet"), ("clean", "dirty"), ("left", "right"),
    ("black", "white"), ("win", "lose"), ("strong", "weak"), ("inside", "outside"),
    ("near", "far"), ("summer", "winter"), ("start", "stop"), ("easy", "difficult"),
    ("yes", "no"), ("boy", "girl"),
]
OPPOSITES_ONE = [  # asked one way only (the answer word has another opposite too)
    ("young", "old"), ("soft", "hard"), ("tall", "short"), ("heavy", "light"), ("dark", "light"),
]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
MONTH_DAYS = [31, None, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
            "ninth", "tenth", "eleventh", "twelfth"]

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                "seventeen", "eighteen", "nineteen", "twenty"]

CAPITALS = [  # (country as written after "of", capital)
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Russia", "Moscow"), ("Canada", "Ottawa"), ("Mexico", "Mexico City"), ("Brazil", "Brasilia"),
    ("Argentina", "Buenos Aires"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"),
    ("Australia", "Canberra"), ("New Zealand", "Wellington"), ("Greece", "Athens"),
    ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Austria", "Vienna"),
    ("the Netherlands", "Amsterdam"), ("Turkey", "Ankara"), ("Thailand", "Bangkok"),
    ("South Korea", "Seoul"), ("the United Kingdom", "London"),
]

USES = [  # (object, what it is for, as a gerund phrase)
    ("a cup", "drinking"), ("a key", "opening a lock"), ("a spoon", "eating soup"),
    ("a bed", "sleeping"), ("a chair", "sitting on"), ("a knife", "cutting food"),
    ("a pen", "writing"), ("a toothbrush", "cleaning your teeth"), ("soap", "washing your hands"),
    ("an umbrella", "staying dry in the rain"), ("a clock", "telling the time"),
    ("a map", "finding your way"), ("a phone", "calling people"),
    ("a ladder", "reaching high places"), ("a hammer", "hitting nails"),
    ("a broom", "sweeping the floor"), ("an oven", "baking food"),
    ("a fridge", "keeping food cold"), ("a towel", "drying yourself"), ("a book", "reading"),
    ("a camera", "taking photos"), ("a pillow", "resting your head"),
    ("a kettle", "boiling water"), ("a coat", "keeping warm"), ("a bicycle", "riding"),
]

SPELL_WORDS = [
    "cat", "dog", "sun", "moon", "tree", "book", "fish", "bird", "house", "apple", "water",
    "green", "happy", "red", "blue", "car", "bus", "milk", "bread", "cake", "ball", "hat",
    "shoe", "door", "rain", "snow", "star", "cow", "pig", "duck", "frog", "lion", "bear",
    "hand", "nose", "egg", "cup", "pen", "box", "bed", "ship", "road", "river", "cloud",
    "night", "day", "time", "friend", "school", "table", "chair", "music", "home", "flower",
    "tiger", "horse", "mouse", "hello", "robot", "model",
]

NAMES = ["Sam", "Alex", "Maria", "Tom", "Priya", "Omar", "Lena", "Kofi", "Yuki", "Ben", "Ana",
         "Leo", "Mia", "Ravi", "Sara", "Noah", "Emma", "Ivan", "Zara", "Hugo", "Nina", "Ali",
         "Chen", "Rosa", "Max", "Lucy", "Finn", "Aisha", "Jack", "Ella", "Tariq", "Ines",
         "Oscar", "Ruby", "Kai", "Maya", "Dan", "Eva", "Sofia", "Jon"]


# ----------------------------------------------------------------------------------------------
# Surface variation of user text: case and final punctuation, as real users type.

def user_text(rng, s):
    if rng.chance(0.25):
        s = s.lower()
    if s[-1] in "?.!" and rng.chance(0.15):
        s = s[:-1]
    return s


# ----------------------------------------------------------------------------------------------
# Topic families. Each returns (user, bot); `follow` builds the "and X?" question of a follow-up.

class Topics:
    def __init__(self, rng):
        self.rng = rng
        r = rng
        self.decks = {
            "colour": Deck(r, COLOURS + MULTI_COLOURS),
            "colour_yn": Deck(r, COLOURS),
            "sound": Deck(r, SOUNDS),
            "legs": Deck(r, LEGS),
            "ability": Deck(r, ABILITIES),
            "property": Deck(r, PROPERTIES),
            "opposite": Deck(r, OPPOSITES_BOTH + [(b, a) for a, b in OPPOSITES_BOTH] + OPPOSITES_ONE),
            "capital": Deck(r, CAPITALS),
            "use": Deck(r, USES),
            "spell": Deck(r, SPELL_WORDS),
            "day": Deck(r, list(range(7))),
            "month": Deck(r, list(range(12))),
            "name": Deck(r, NAMES),
        }

    def deal(self, name):
        return self.decks[name].deal()

    # -- colours --
    def colour(self, item=None, follow=False):
        r = self.rng
        thing, col = item or self.deal("colour")
        word = r.choice(["colour", "color"])
        if follow:
            q = r.choice(["And %s?", "What about %s?", "And what colour is %s?", "How about %s?"]) % thing
        else:
            q = r.choice([
                "What %s is %s?", "What %s is %s usually?", "Which %s is %s?",
                "Can you tell me what %s %s is?", "Do you know what %s %s is?",
                "Tell me the %s of %s.", "What is the %s of %s?",
            ]) % (word, thing)
        a = r.choice(["%s is %s.", "%s is %s.", "%s is usually %s."]) % (cap(thing), col)
        return q, a

    def colour_yn(self):
        r = self.rng
        thing, col = self.deal("colour_yn")
        asked = col if r.chance(0.5) else r.choice([c for c in COLOUR_WORDS if c != col])
        q = r.choice(["Is %s %s?", "Is %s really %s?", "Tell me, is %s %s?"]) % (thing, asked)
        if asked == col:
            a = r.choice(["Yes, %s is %s.", "Yes! %s is %s."]) % (thing, col)
            if a.startswith("Yes! "):
                a = "Yes! " + cap(a[5:])
        else:
            a = "No, %s is not %s. It is %s." % (thing, asked, col)
        return q, a

    # -- animals --
    def sound(self, item=None, follow=False):
        r = self.rng
        animal, snd = item or self.deal("sound")
        if follow:
            q = r.choice(["And %s?", "What about %s?", "And what does %s say?"]) % animal
        else:
            q = r.choice([
                "What sound does %s make?", "What does %s say?", "What noise does %s make?",
                "How does %s go?", "What sound do you hear from %s?", "Which sound does %s make?",
            ]) % animal
        a = r.choice(["%s says %s.", "%s says %s.", "%s goes %s!"]) % (cap(animal), snd)
        return q, a

    def legs(self, item=None, follow=False):
        r = self.rng
        animal, n = item or self.deal("legs")
        if follow:
            q = r.choice(["And %s?", "What about %s?", "And how many legs does %s have?"]) % animal
        else:
            q = r.choice([
                "How many legs does %s have?", "How many legs has %s got?",
                "Count the legs of %s.", "%s has how many legs?",
            ]) % animal
            q = cap(q)
        if n == "no":
            a = r.choice(["%s has no legs.", "%s has no legs at all."]) % cap(animal)
        else:
            a = "%s has %s legs." % (cap(animal), n)
        return q, a

    def ability(self):
        r = self.rng
        animal, verb, yes = self.deal("ability")
        q = r.choice(["Can %s %s?", "Is %s able to %s?", "Do you think %s can %s?"]) % (animal, verb)
        if yes:
            a = r.choice(["Yes, %s can %s.", "Yes! %s can %s."]) % (animal, verb)
            if a.startswith("Yes! "):
                a = "Yes! " + cap(a[5:])
        else:
            alt = ABILITY_ALT.get(animal)
            a = "No, %s cannot %s." % (animal, verb)
            if alt and alt != verb:
                a += " It can %s." % alt
        return q, a

    def prop(self):
        r = self.rng
        thing, good, bad = self.deal("property")
        asked = good if r.chance(0.5) else bad
        q = r.choice(["Is %s %s?", "Is %s %s or not?", "Would you say %s is %s?"]) % (thing, asked)
        if asked == good:
            a = r.choice(["Yes, %s is %s.", "Yes, %s is very %s."]) % (thing, good)
        else:
            a = "No, %s is not %s. It is %s." % (thing, bad, good)
        return q, a

    # -- words --
    def opposite(self, item=None, follow=False):
        r = self.rng
        w, o = item or self.deal("opposite")
        if follow:
            q = r.choice(["And %s?", "What about %s?", "And the opposite of %s?"]) % w
        else:
            q = r.choice([
                "What is the opposite of %s?", "What's the opposite of %s?",
                "Tell me the opposite of %s.", "Opposite of %s?", "What word is the opposite of %s?",
                "Do you know the opposite of %s?",
            ]) % w
        a = "The opposite of %s is %s." % (w, o)
        return q, a

    def spell(self, item=None, follow=False):
        r = self.rng
        w = item or self.deal("spell")
        kind = r.weighted([(6, "spell"), (2, "count"), (2, "first"), (1, "last")])
        if follow:
            kind = "spell"
            q = r.choice(["And %s?", "Now spell %s.", "What about %s?"]) % w
        elif kind == "spell":
            q = r.choice([
                "How do you spell %s?", "Spell %s.", "Can you spell %s?", "Please spell %s.",
                "How is %s spelled?", "Spell the word %s.",
            ]) % w
        elif kind == "count":
            q = r.choice(["How many letters are in %s?", "How many letters does %s have?",
                          "How many letters are in the word %s?"]) % w
        elif kind == "first":
            q = r.choice(["What is the first letter of %s?", "Which letter does %s start with?",
                          "What letter does %s begin with?"]) % w
        else:
            q = r.choice(["What is the last letter of %s?", "Which letter does %s end with?"]) % w
        if kind == "spell":
            a = r.choice(["%s is spelled %s.", "The word %s is spelled %s."]) % (w, "-".join(w))
            a = cap(a)
        elif kind == "count":
            n = len(w)
            a = "The word %s has %s letters." % (w, NUMBER_WORDS[n] if r.chance(0.5) else str(n))
        elif kind == "first":
            a = "The first letter of %s is %s." % (w, w[0])
        else:
            a = "The last letter of %s is %s." % (w, w[-1])
        return q, a

    # -- places and things --
    def capital(self, item=None, follow=False):
        r = self.rng
        country, city = item or self.deal("capital")
        if follow:
            q = r.choice(["And %s?", "What about %s?", "And the capital of %s?", "How about %s?"]) % country
            return q, "The capital of %s is %s." % (country, city)
        if r.chance(0.2):
            q = r.choice(["%s is the capital of which country?", "Which country has %s as its capital?",
                          "Where is %s?"]) % city
            q = cap(q)
            a = r.choice(["%s is the capital of %s.", "%s is in %s. It is the capital."]) % (city, country)
            return q, a
        q = r.choice([
            "What is the capital of %s?", "What's the capital of %s?", "Which city is the capital of %s?",
            "Tell me the capital of %s.", "Do you know the capital of %s?", "Capital of %s?",
            "What is the capital city of %s?",
        ]) % country
        a = r.choice(["The capital of %s is %s.", "The capital of %s is %s.", "It is %s."])
        a = a % (city,) if a == "It is %s." else a % (country, city)
        return q, a

    def use(self, item=None, follow=False):
        r = self.rng
        obj, purpose = item or self.deal("use")
        if follow:
            q = r.choice(["And %s?", "What about %s?", "And what is %s for?"]) % obj
        else:
            q = r.choice([
                "What is %s for?", "What is %s used for?", "What do you use %s for?",
                "Why do people use %s?", "What can I do with %s?", "What is the use of %s?",
            ]) % obj
        a = r.choice(["%s is used for %s.", "%s is for %s.", "We use %s for %s."])
        a = cap(a % (obj, purpose))
        return q, a

    # -- time --
    def day(self):
        r = self.rng
        i = self.deal("day")
        d, nxt, prv = DAYS[i], DAYS[(i + 1) % 7], DAYS[(i - 1) % 7]
        kind = r.weighted([(5, "after"), (3, "before"), (2, "tomorrow"), (1, "count"), (1, "weekend")])
        if kind == "after":
            q = r.choice(["What day comes after %s?", "What is the day after %s?",
                          "Which day is after %s?", "What comes after %s?"]) % d
            a = r.choice(["The day after %s is %s.", "%s comes after %s."])
            a = a % (d, nxt) if a.startswith("The") else a % (nxt, d)
        elif kind == "before":
            q = r.choice(["What day comes before %s?", "What is the day before %s?",
                          "Which day is before %s?"]) % d
            a = "The day before %s is %s." % (d, prv)
        elif kind == "tomorrow":
            q = r.choice(["If today is %s, what day is tomorrow?",
                          "If it is %s today, what day will it be tomorrow?"]) % d
            a = "If today is %s, tomorrow is %s." % (d, nxt)
        elif kind == "count":
            q = r.choice(["How many days are in a week?", "How many days does a week have?"])
            a = r.choice(["There are seven days in a week.", "A week has seven days."])
        else:
            q = r.choice(["Which days are the weekend?", "What days are the weekend?"])
            a = "Saturday and Sunday are the weekend."
        return q, a

    def month(self):
        r = self.rng
        i = self.deal("month")
        m, nxt, prv = MONTHS[i], MONTHS[(i + 1) % 12], MONTHS[(i - 1) % 12]
        kind = r.weighted([(4, "after"), (2, "before"), (3, "days"), (2, "which"), (1, "count")])
        if kind == "after":
            q = r.choice(["What month comes after %s?", "What is the month after %s?",
                          "Which month follows %s?"]) % m
            a = "The month after %s is %s." % (m, nxt)
        elif kind == "before":
            q = r.choice(["What month comes before %s?", "What is the month before %s?"]) % m
            a = "The month before %s is %s." % (m, prv)
        elif kind == "days":
            q = r.choice(["How many days are in %s?", "How many days does %s have?"]) % m
            if MONTH_DAYS[i] is None:
                a = "February has 28 days, or 29 days in a leap year."
            else:
                a = "%s has %d days." % (m, MONTH_DAYS[i])
        elif kind == "which":
            if r.chance(0.5):
                q = r.choice(["What is the %s month of the year?", "Which month is the %s month?"]) % ORDINALS[i]
                a = "The %s month of the year is %s." % (ORDINALS[i], m)
            else:
                q = r.choice(["Which month of the year is %s?", "What number month is %s?"]) % m
                a = "%s is the %s month of the year." % (m, ORDINALS[i])
        else:
            q = r.choice(["How many months are in a year?", "How many months does a year have?"])
            a = r.choice(["There are twelve months in a year.", "A year has twelve months."])
        return q, a

    # -- numbers --
    def number(self):
        r = self.rng
        kind = r.weighted([(4, "after"), (2, "before"), (2, "word_after"), (3, "count"), (3, "bigger")])
        if kind == "after":
            n = r.below(100)
            q = r.choice(["What number comes after %d?", "What comes after %d?",
                          "What is the next number after %d?", "What is %d plus one?"]) % n
            a = r.choice(["The number after %d is %d.", "After %d comes %d."]) % (n, n + 1)
        elif kind == "before":
            n = 1 + r.below(99)
            q = r.choice(["What number comes before %d?", "What comes before %d?",
                          "What is the number before %d?"]) % n
            a = "The number before %d is %d." % (n, n - 1)
        elif kind == "word_after":
            n = r.below(20)
            q = r.choice(["What number comes after %s?", "What comes after %s?"]) % NUMBER_WORDS[n]
            a = "After %s comes %s." % (NUMBER_WORDS[n], NUMBER_WORDS[n + 1])
        elif kind == "count":
            if r.chance(0.5):
                hi = 3 + r.below(8)
                q = r.choice(["Count to %d.", "Can you count to %d?", "Please count to %d.",
                              "Count from 1 to %d."]) % hi
                lo = 1
            else:
                lo = r.below(15)
                hi = lo + 2 + r.below(6)
                q = r.choice(["Count from %d to %d.", "Can you count from %d to %d?"]) % (lo, hi)
            a = ", ".join(str(k) for k in range(lo, hi + 1)) + "."
        else:
            x = r.below(21)
            y = r.below(20)
            if y >= x:
                y += 1
            big, small = max(x, y), min(x, y)
            form = r.weighted([(2, "which"), (1, "bigger"), (1, "smaller")])
            if form == "which":
                q = r.choice(["Which is bigger, %d or %d?", "Which number is bigger, %d or %d?",
                              "Which is more, %d or %d?"]) % (x, y)
                a = "%d is bigger than %d." % (big, small)
            elif form == "bigger":
                q = "Is %d bigger than %d?" % (x, y)
                a = ("Yes, %d is bigger than %d." if x > y else "No, %d is smaller than %d.") % (x, y)
            else:
                q = "Is %d smaller than %d?" % (x, y)
                a = ("Yes, %d is smaller than %d." if x < y else "No, %d is bigger than %d.") % (x, y)
        return q, a

    def sums(self, item=None, follow=False):
        r = self.rng
        minus = r.chance(0.35)
        x, y = r.below(11), r.below(11)
        if minus and y > x:
            x, y = y, x
        z = x - y if minus else x + y
        if follow:
            q = r.choice(["And %d %s %d?", "What about %d %s %d?"]) % (x, "minus" if minus else "plus", y)
            a = "%d %s %d is %d." % (x, "minus" if minus else "plus", y, z)
            return q, a
        symbol = r.chance(0.3)
        if minus:
            op = "-" if symbol else r.choice(["minus", "minus", "take away"])
            q = r.choice(["What is %d %s %d?", "What's %d %s %d?", "How much is %d %s %d?",
                          "Can you tell me %d %s %d?"]) % (x, op, y)
            if r.chance(0.2) and not symbol:
                q = r.choice(["Take %d away from %d.", "Subtract %d from %d."]) % (y, x)
                op = "minus"
        else:
            op = "+" if symbol else "plus"
            q = r.choice(["What is %d %s %d?", "What's %d %s %d?", "How much is %d %s %d?",
                          "Can you tell me %d %s %d?"]) % (x, op, y)
            if r.chance(0.25) and not symbol:
                q = r.choice(["Add %d and %d.", "What do you get if you add %d and %d?",
                              "Can you add %d and %d?", "What is the sum of %d and %d?"]) % (x, y)
        if symbol:
            a = r.choice(["%d %s %d = %d.", "The answer is %d."])
            a = a % (x, op, y, z) if "=" in a else a % z
        else:
            a = r.choice(["%d %s %d is %d.", "%d %s %d is %d.", "The answer is %d."])
            a = a % z if a.startswith("The") else a % (x, op, y, z)
        return q, a


# ----------------------------------------------------------------------------------------------
# Conversation turns: greetings, identity, feelings, weather, thanks, farewells.

GREET_Q = ["Hello!", "Hi!", "Hey!", "Hi there!", "Hello there!", "Hey there!", "Hello shoestring!",
           "Hi shoestring!", "Hey shoestring.", "Hiya!", "Hello.", "Hi.", "Greetings!", "Yo!"]
GREET_A = ["Hello! How can I help you?", "Hi there! What would you like to talk about?",
           "Hello! Nice to see you.", "Hi! Ask me anything simple.", "Hey! How are you today?",
           "Hello! What can I do for you?"]
TIME_GREET = [("Good morning!", ["Good morning! How can I help you today?", "Good morning to you too!"]),
              ("Good afternoon!", ["Good afternoon! What would you like to talk about?",
                                   "Good afternoon to you too!"]),
              ("Good evening!", ["Good evening! How can I help you?", "Good evening to you too!"])]

HOW_Q = ["How are you?", "How are you doing?", "How are you today?", "How is it going?",
         "How do you feel?", "Are you well?", "How have you been?"]
HOW_A = ["I am well, thank you! How are you?", "I am doing fine, thanks for asking. And you?",
         "I am good, thank you. How about you?", "Very well, thanks! How are you?"]

IDENTITY = [
    (["What is your name?", "What's your name?", "What are you called?", "Do you have a name?",
      "Tell me your name.", "What should I call you?"],
     ["My name is shoestring.", "I am called shoestring.", "My name is shoestring. Nice to meet you!"]),
    (["Who are you?", "Who am I talking to?", "Tell me about yourself.", "Introduce yourself."],
     ["I am shoestring, a tiny language model that runs on small computers.",
      "I am shoestring. I am a tiny language model, and I run on small computers."]),
    (["What are you?", "Are you a computer program?", "What kind of thing are you?"],
     ["I am a tiny language model called shoestring. I run on small computers like a Raspberry Pi.",
      "I am a small language model, a program that runs on a small computer."]),
    (["What can you do?", "How can you help me?", "What are you good at?", "What do you know?",
      "Can you help me?"],
     ["I can chat, answer simple questions, do small sums, spell short words and name the capitals of some countries.",
      "I can answer simple questions about colours, animals, numbers, days, months and capitals. I can also spell short words."]),
    (["Are you a robot?", "Are you human?", "Are you a person?", "Are you alive?", "Are you real?"],
     ["No, I am not a person. I am a tiny language model called shoestring.",
      "I am not human. I am a small program that runs on a computer."]),
    (["How old are you?", "When were you born?", "How long have you been around?"],
     ["I am very new. I was trained only a few minutes ago.",
      "I am very young. My training took just a few minutes."]),
    (["Where do you live?", "Where are you?", "Where do you run?"],
     ["I live on this computer.", "I run right here, on this small computer."]),
    (["Who made you?", "Who built you?", "Who trained you?", "Who created you?"],
     ["I was made with the shoestring program and trained on this computer.",
      "The shoestring program trained me, right here on this computer."]),
    (["How big are you?", "How many parameters do you have?", "How large is your brain?"],
     ["I am very small. I have about half a million parameters.",
      "I am tiny: about half a million parameters."]),
    (["Are you smart?", "Are you clever?", "Do you know everything?"],
     ["I am only a tiny model, so I know simple things best.",
      "Not very! I am a tiny model, but I try my best with simple questions."]),
    (["What is your favourite colour?", "What is your favorite color?", "Which colour do you like?"],
     ["I like blue, the colour of the sky.", "My favourite colour is blue."]),
    (["What is your favourite animal?", "What is your favorite animal?", "Which animal do you like best?"],
     ["I like cats. They are small and clever, like me.", "My favourite animal is the cat."]),
    (["Do you eat food?", "Are you hungry?", "What do you eat?"],
     ["I do not eat food. I only need a little electricity.",
      "No, I do not eat. A computer program only needs power."]),
    (["Do you sleep?", "Are you tired?"],
     ["I do not sleep, but I rest when the computer is off.", "No, I never get tired."]),
    (["Tell me a joke.", "Do you know a joke?", "Say something funny.", "Make me laugh."],
     ["Why did the tiny model go to school? To learn a few more words!",
      "What do you call a sleepy computer? A laptop that needs a nap!",
      "Why was the calculator so calm? It knew how to keep things even.",
      "Why did the cloud stay home? It was feeling a bit under the weather."]),
    (["What time is it?", "Do you know the time?", "What is the time?"],
     ["I do not have a clock, so I cannot tell the time. Sorry!",
      "Sorry, I cannot see a clock from here."]),
    (["What is the meaning of life?", "Why is the sky so big?", "What is love?",
      "Can you explain physics?", "What happens after we die?"],
     ["That is a big question. I am only a tiny model, so I know simple things best.",
      "I do not know. I am a tiny model, so ask me something simple!"]),
    (["You are smart.", "You are clever.", "Good job!", "Well done!", "That is right.", "Nice!"],
     ["Thank you! I try my best.", "Thanks! That is kind of you.", "Thank you! I am happy to help."]),
    (["That is wrong.", "You are wrong.", "No, that is not right.", "That is not true."],
     ["Sorry! I am a tiny model and I make mistakes.", "Oh no, sorry about that. I am still learning."]),
    (["I like you.", "You are nice.", "I love talking to you.", "You are my friend."],
     ["That is kind of you! I like talking with you too.", "Thank you! You are nice too."]),
    (["Can you hear me?", "Are you there?", "Are you listening?"],
     ["Yes, I am here. What would you like to talk about?", "Yes, I am listening."]),
]

FEELINGS = [  # (feeling, replies)
    ("happy", ["I am glad to hear that!", "That is great! I am happy for you."]),
    ("good", ["That is good to hear.", "Great! I am glad you are good."]),
    ("fine", ["Good to hear.", "Glad to hear that."]),
    ("great", ["That is wonderful!", "Great to hear!"]),
    ("sad", ["I am sorry you feel sad. Would you like to talk about it?",
             "Oh no. I hope you feel better soon."]),
    ("tired", ["Maybe you should get some rest.", "A short nap might help. Rest well."]),
    ("bored", ["We could play a word game. Ask me to spell a word!",
               "Let us talk. Ask me the capital of a country!"]),
    ("hungry", ["Maybe it is time for a snack.", "Why not eat some bread or an apple?"]),
    ("thirsty", ["A glass of water would help.", "You should drink some water."]),
    ("cold", ["Put on a warm coat.", "Stay warm! Maybe make a hot drink."]),
    ("sick", ["I am sorry you are sick. Rest and drink water, and see a doctor if it gets worse.",
              "Oh no. I hope you feel better soon."]),
    ("excited", ["That is great! What are you excited about?", "How fun! I hope it goes well."]),
    ("scared", ["I am sorry you are scared. Maybe talk to someone you trust.",
                "It is okay to be scared sometimes. You are not alone."]),
    ("angry", ["I am sorry you are angry. Taking a deep breath can help.",
               "That sounds hard. Maybe take a short walk."]),
    ("lonely", ["I am here to talk with you.", "I am sorry you feel lonely. I am happy to chat."]),
]
FEEL_Q = ["I am %s.", "I'm %s.", "I feel %s.", "I am feeling %s.", "I feel %s today.", "I am %s today."]

WEATHER = [  # (statement, replies)
    (["It is raining.", "It is raining today.", "It's raining outside."],
     ["Do not forget your umbrella!", "Rain is good for the plants. Stay dry!"]),
    (["It is sunny.", "It is sunny today.", "The sun is shining."],
     ["That sounds lovely. Enjoy the sunshine!", "Nice! A sunny day is good for a walk."]),
    (["It is snowing.", "It is snowing outside."],
     ["Snow is fun! Stay warm.", "Wear a warm coat if you go out in the snow."]),
    (["It is windy.", "It is very windy today."],
     ["Hold on to your hat!", "Windy days are good for flying a kite."]),
    (["It is cold outside.", "It is cold today."],
     ["Stay warm and wear a coat.", "Maybe make a hot drink to warm up."]),
    (["It is hot today.", "It is very hot outside."],
     ["Drink plenty of water and stay in the shade.", "Stay cool! Drink lots of water."]),
    (["It is cloudy.", "It is cloudy today."],
     ["A cloudy day can still be a good day.", "Maybe it will rain later. Take an umbrella."]),
]
WEATHER_Q = ["What is the weather like?", "What is the weather today?", "Is it going to rain?",
             "How is the weather?"]
WEATHER_A = ["I cannot see outside, so I do not know. What is it like where you are?",
             "I do not know, I cannot look out of a window. How is it where you are?"]

THANKS_Q = ["Thank you!", "Thanks!", "Thanks a lot.", "Thank you very much.", "Thanks for your help.",
            "Thank you, shoestring.", "Cheers!", "Thanks, that helps."]
THANKS_A = ["You are welcome!", "You're welcome! Happy to help.", "No problem at all.",
            "My pleasure!", "You are welcome. Ask me anything else!"]

BYE_Q = ["Bye!", "Goodbye!", "See you later.", "See you soon!", "Bye bye!", "I have to go now.",
         "Talk to you later.", "Goodbye, shoestring."]
BYE_A = ["Goodbye! Have a nice day.", "Bye! It was nice talking to you.", "See you later!",
         "Goodbye! Come back soon.", "Bye! Take care."]
NIGHT_Q = ["Good night!", "Good night, shoestring.", "I am going to bed now. Good night."]
NIGHT_A = ["Good night! Sleep well.", "Sleep well! Good night."]


class Dialogue:
    """Builds one dialogue; remembers what the user told (name, today, feelings) for later turns."""

    def __init__(self, rng, topics):
        self.rng, self.t = rng, topics
        self.turns = []
        self.name = None
        self.today = None

    def say(self, q, a, style=True):
        if style:
            q = user_text(self.rng, q)
        self.turns.append((q, a))

    # -- openings --
    def greet(self):
        r = self.rng
        if r.chance(0.25):
            q, answers = r.choice(TIME_GREET)
            self.say(q, r.choice(answers))
        else:
            self.say(r.choice(GREET_Q), r.choice(GREET_A))

    def how_are_you(self):
        r = self.rng
        self.say(r.choice(HOW_Q), r.choice(HOW_A))
        if r.chance(0.7):
            feeling, replies = r.choice(FEELINGS)
            q = r.choice(FEEL_Q) % feeling
            if r.chance(0.3) and feeling in ("good", "fine", "great", "happy"):
                q = r.choice(["%s, thanks.", "%s, thank you."]) % cap(r.choice(["I am %s", "I'm %s"]) % feeling)
            self.say(q, r.choice(replies))

    def introduce(self):
        r = self.rng
        self.name = self.t.deal("name")
        q = r.choice(["My name is %s.", "I am %s.", "I'm %s.", "Call me %s.", "Hi, I am %s.",
                      "Hello, my name is %s."]) % self.name
        a = r.choice(["Nice to meet you, %s!", "Hello, %s! I am shoestring.",
                      "Hi %s! Nice to meet you. I am shoestring."]) % self.name
        self.say(q, a)

    # -- context that refers back --
    def ask_name(self):
        r = self.rng
        q = r.choice(["What is my name?", "Do you remember my name?", "Who am I?", "What's my name?"])
        if self.name:
            yes = "Yes, y" if q.startswith("Do you") else "Y"
            a = r.choice([yes + "our name is %s.", "You are %s.", "You told me your name is %s."]) % self.name
        else:
            a = "I do not know your name yet. What is it?"
        self.say(q, a)
        if not self.name and r.chance(0.8):
            self.name = self.t.deal("name")
            q = r.choice(["It is %s.", "My name is %s.", "%s."]) % self.name
            self.say(q, r.choice(["Nice to meet you, %s!", "Thank you, %s. I will remember that."]) % self.name)

    def set_today(self):
        r = self.rng
        i = self.t.deal("day")
        if r.chance(0.5):
            self.say(r.choice(["What day is it today?", "What day is it?", "Do you know what day it is?"]),
                     r.choice(["I do not have a calendar, so I do not know. What day is it?",
                               "I cannot see a calendar. Can you tell me?"]))
            q = r.choice(["It is %s.", "Today is %s.", "%s."]) % DAYS[i]
        else:
            q = r.choice(["Today is %s.", "It is %s today."]) % DAYS[i]
        self.today = i
        a = r.choice(["Thank you. Today is %s." % DAYS[i],
                      "Okay, today is %s. Then tomorrow is %s." % (DAYS[i], DAYS[(i + 1) % 7]),
                      "Thanks! I will remember that it is %s." % DAYS[i]])
        self.say(q, a)

    def ask_today(self):
        r = self.rng
        i = self.today
        kind = r.weighted([(3, "tomorrow"), (2, "yesterday"), (1, "today")])
        if kind == "tomorrow":
            q = r.choice(["What day is tomorrow?", "So what day will it be tomorrow?",
                          "And what day is it tomorrow?"])
            a = "Tomorrow is %s." % DAYS[(i + 1) % 7]
        elif kind == "yesterday":
            q = r.choice(["What day was yesterday?", "And what day was it yesterday?"])
            a = "Yesterday was %s." % DAYS[(i - 1) % 7]
        else:
            q = r.choice(["What day is it today?", "Do you remember what day it is?"])
            a = "You told me it is %s." % DAYS[i]
        self.say(q, a)

    def weather(self):
        r = self.rng
        if r.chance(0.4):
            self.say(r.choice(WEATHER_Q), r.choice(WEATHER_A))
        qs, replies = r.choice(WEATHER)
        self.say(r.choice(qs), r.choice(replies))

    def feeling(self):
        r = self.rng
        feeling, replies = r.choice(FEELINGS)
        self.say(r.choice(FEEL_Q) % feeling, r.choice(replies))

    def identity(self):
        r = self.rng
        qs, answers = r.choice(IDENTITY)
        self.say(r.choice(qs), r.choice(answers))

    # -- fact topics, with follow-ups that refer back to the previous question --
    def topic(self):
        r, t = self.rng, self.t
        name = r.weighted([
            (7, "colour"), (3, "colour_yn"), (6, "sound"), (4, "legs"), (4, "ability"), (4, "prop"),
            (7, "opposite"), (5, "day"), (5, "month"), (7, "number"), (8, "sums"), (8, "capital"),
            (6, "use"), (7, "spell"),
        ])
        follow_deck = {"colour": "colour", "sound": "sound", "legs": "legs", "opposite": "opposite",
                       "capital": "capital", "use": "use", "spell": "spell", "sums": None}
        q, a = getattr(t, name)()
        self.say(q, a)
        n_follow = 0
        while name in follow_deck and n_follow < 2 and r.chance(0.35 if n_follow == 0 else 0.3):
            deck = follow_deck[name]
            item = t.deal(deck) if deck else None
            q, a = getattr(t, name)(item=item, follow=True)
            self.say(q, a)
            n_follow += 1

    def close(self, n):
        r = self.rng
        if n == 2 or (n == 1 and r.chance(0.45)):
            self.say(r.choice(THANKS_Q), r.choice(THANKS_A))
            n -= 1
        if n:
            if r.chance(0.2):
                self.say(r.choice(NIGHT_Q), r.choice(NIGHT_A))
            else:
                self.say(r.choice(BYE_Q), r.choice(BYE_A))


def make_dialogue(rng, topics):
    """One dialogue of 1 to 5 turn pairs: an optional opening, topics, an optional closing."""
    d = Dialogue(rng, topics)
    target = rng.weighted([(1, 1), (3, 2), (4, 3), (4, 4), (3, 5)])
    if rng.chance(0.5):
        d.greet()
        opener = rng.weighted([(4, None), (3, "how"), (3, "intro"), (1, "who")])
        if opener == "how":
            d.how_are_you()
        elif opener == "intro":
            d.introduce()
        elif opener == "who":
            d.identity()
    elif rng.chance(0.15):
        d.introduce()
    n_open = len(d.turns)
    n_close = int(rng.chance(0.3)) + int(rng.chance(0.35))
    while True:  # at least one body item, then until the target leaves room for the closing
        kind = rng.weighted([(14, "topic"), (2, "identity"), (1, "feeling"), (1, "weather"),
                             (2, "today"), (3 if d.name else 1, "name")])
        if kind == "topic":
            d.topic()
        elif kind == "identity":
            d.identity()
        elif kind == "feeling":
            d.feeling()
        elif kind == "weather":
            d.weather()
        elif kind == "today":
            if d.today is None:
                d.set_today()
            d.ask_today()
        elif d.name is not None or rng.chance(0.4):
            d.ask_name()
        else:
            d.identity()
        if len(d.turns) + n_close >= target:
            break
    if d.name is not None and len(d.turns) + n_close < 5 and rng.chance(0.7):
        d.ask_name()  # the bot recalls the name the user gave earlier
        target = len(d.turns) + n_close
    # Cut from the end only, so every answer that refers back still has its earlier turn.
    keep = min(5, max(n_open + 1, target - n_close))
    del d.turns[keep:]
    d.close(min(n_close, 5 - keep))
    return d.turns


# ----------------------------------------------------------------------------------------------
# Output.

def check_body(text):
    """A turn body must be one non-empty line, trimmed, with no special-token text in it."""
    if not text or text != text.strip() or "\n" in text or "\r" in text:
        raise ValueError("bad turn body %r" % text)
    for s in SPECIALS:
        if s in text:
            raise ValueError("special token %s inside turn body %r" % (s, text))


def generate(seed=SEED, n_dialogues=N_DIALOGUES):
    """The whole corpus as one string (MODEL.md §4), identical for identical arguments."""
    rng = Rng(seed)
    topics = Topics(rng)
    blocks = []
    for _ in range(n_dialogues):
        lines = []
        for q, a in make_dialogue(rng, topics):
            check_body(q)
            check_body(a)
            lines.append("[USER] %s [EOS]" % q)
            lines.append("[BOT] %s [EOS]" % a)
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def main(argv=None):
    p = argparse.ArgumentParser(description="Generate the shoestring default chat corpus (MODEL.md §4).")
    p.add_argument("--out", required=True, help="output file, e.g. shoestring/data/chat.txt")
    p.add_argument("--seed", type=int, default=SEED, help="RNG seed (default: %(default)s)")
    p.add_argument("--dialogues", type=int, default=N_DIALOGUES, help="number of dialogues (default: %(default)s)")
    args = p.parse_args(argv)
    data = generate(args.seed, args.dialogues).encode("utf-8")
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.out)
    n_dialogues = data.count(b"\n\n") + 1
    print("%s: %d bytes, %d dialogues, %d turns" % (args.out, len(data), n_dialogues, data.count(b"[USER]")),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
