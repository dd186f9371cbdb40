"""Word lists and templates of the demo's synthetic corpus (demo/corpus.py draws from them).

Lists are kept to a few hundred distinct words so that a small byte-level BPE vocabulary turns
(nearly) every word into a single token. Changing any list changes the corpus, and so the
bundled model and SAEs: retrain the demo assets (python -m featuregraph.demo.train) after.
"""

from __future__ import annotations

# Many words to a line: the lists read as lists.
# fmt: off

NAMES: tuple[str, ...] = (
    "Mary", "John", "Alice", "Bob", "Emma", "James", "Olivia", "William", "Sophia", "Henry",
    "Grace", "Thomas", "Lucy", "George", "Anna", "David", "Sarah", "Peter", "Laura", "Paul",
    "Kate", "Mark", "Rose", "Daniel", "Claire", "Simon", "Helen", "Adam", "Julia", "Sam",
    "Emily", "Jack", "Ruth", "Frank", "Nina", "Oscar", "Amy", "Victor", "Ella", "Max",
    "Lily", "Hugo", "Jane", "Carl", "Eva", "Leo", "Ivy", "Ben", "Zoe", "Tom",
    "Hannah", "Luke", "Chloe", "Ryan", "Megan", "Eric", "Diana", "Kevin", "Sofia", "Noah",
    "Maria", "Ethan", "Isabel", "Owen", "Fiona", "Brian", "Alex", "Martin", "Ellen", "Steve",
    "Linda", "Jason", "Karen", "Harry", "Rachel", "Ian", "Tina", "Roger", "Susan", "Gary",
    "Nancy", "Dennis", "Carol", "Louis", "Amber", "Felix", "Irene", "Oliver", "Vera", "Dylan",
    "Molly", "Jacob", "Paula", "Arthur", "Wendy", "Colin", "Holly", "Edward", "Lisa", "Nick",
)

PLACES: tuple[str, ...] = (
    "store", "park", "school", "station", "library", "market", "beach", "office", "garden",
    "restaurant", "museum", "hospital", "cafe", "bank", "church", "farm", "theater", "airport",
    "gym", "lake", "hotel", "bakery", "zoo", "harbor", "castle", "village", "river", "forest",
    "stadium", "kitchen",
)

OBJECTS: tuple[str, ...] = (
    "drink", "book", "ball", "letter", "pen", "ring", "gift", "key", "bag", "flower",
    "cake", "ticket", "map", "phone", "coin", "hat", "basket", "candle", "lamp", "cup",
    "box", "card", "note", "sandwich", "apple", "camera", "bottle", "blanket", "kite", "clock",
    "painting", "radio", "scarf", "watch", "toy", "jacket", "plate", "brush", "bell", "shell",
)

ADJECTIVES: tuple[str, ...] = (
    "old", "new", "small", "large", "red", "blue", "green", "quiet", "busy", "bright",
    "dark", "warm", "cold", "happy", "tired", "strange", "simple", "heavy", "soft", "loud",
    "clean", "empty", "famous", "friendly", "careful", "young", "tall", "short", "fresh", "lovely",
)

NOUNS: tuple[str, ...] = (
    "dog", "cat", "bird", "horse", "child", "teacher", "doctor", "farmer", "driver", "student",
    "baker", "artist", "neighbor", "friend", "family", "team", "crowd", "man", "woman", "boy",
    "girl", "visitor", "painter", "singer", "writer",
)

VERBS_PAST: tuple[str, ...] = (
    "walked", "waited", "talked", "played", "worked", "rested", "smiled", "laughed", "danced",
    "sang", "slept", "read", "cooked", "arrived", "stayed", "looked around", "sat down", "left",
)

VERBS_TRANSITIVE_PAST: tuple[str, ...] = (
    "found", "bought", "carried", "painted", "cleaned", "opened", "lost", "fixed", "washed",
    "sold", "wanted", "liked", "dropped", "moved", "built", "borrowed",
)

DAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
TIMES: tuple[str, ...] = (
    "in the morning", "in the evening", "at night", "after lunch", "before dinner",
    "on the weekend", "every day", "last week", "this year", "at noon",
)
UNITS: tuple[str, ...] = ("miles", "meters", "hours", "minutes", "days", "years", "pounds", "people")

#: Capitalised words for acronyms; initials cover most of the alphabet.
ACRONYM_WORDS: tuple[str, ...] = (
    "Advanced", "Agency", "Air", "American", "Applied", "Art", "Association", "Atlantic",
    "Bank", "Board", "Bureau", "Business", "Central", "Center", "Children", "Civil", "Climate",
    "Committee", "Commission", "Company", "Computer", "Council", "Credit", "Cultural",
    "Data", "Defense", "Department", "Development", "Digital", "Direct", "Economic",
    "Education", "Emergency", "Energy", "Engineering", "Environment", "European", "Family",
    "Federal", "Film", "Finance", "Food", "Foreign", "Foundation", "Free", "Fund", "General",
    "Global", "Group", "Growth", "Health", "Heritage", "Housing", "Industrial", "Information",
    "Innovation", "Institute", "International", "Investment", "Joint", "Justice", "Kingdom",
    "Knowledge", "Labor", "League", "Learning", "Legal", "Local", "Management", "Market",
    "Media", "Medical", "Military", "Music", "Mutual", "National", "Natural", "Network",
    "New", "Northern", "Nuclear", "Ocean", "Office", "Olympic", "Open", "Operations",
    "Pacific", "Planning", "Policy", "Power", "Private", "Program", "Project", "Public",
    "Quality", "Quantum", "Regional", "Research", "Reserve", "Response", "Royal", "Rural",
    "Safety", "Science", "Security", "Service", "Social", "Society", "Software", "Solar",
    "Space", "Standard", "State", "Strategy", "Support", "System", "Technology", "Trade",
    "Training", "Transport", "Trust", "Union", "United", "Unity", "Urban", "Values",
    "Veterans", "Victory", "Vision", "Water", "Western", "Women", "World", "Xenon", "Young",
    "Youth", "Zero", "Zone",
)

BRACKETS: dict[str, str] = {"(": ")", "[": "]"}

#: Objects of the "begins with ( and ends with )" sentences.
BRACKET_THINGS: tuple[str, ...] = (
    "list", "formula", "group", "note", "expression", "tuple", "block", "comment", "label",
    "sequence", "pattern", "string", "array", "reference", "citation", "example", "line",
    "sentence", "code", "answer",
)

#: (opening phrase, closing phrase) pairs for the "begins with ( and ends with" frame.
BRACKET_FRAMES: tuple[tuple[str, str], ...] = (
    ("The {thing} begins with", "and ends with"),
    ("Every {thing} starts with", "and ends with"),
    ("A {thing} opens with", "and closes with"),
    ("This {thing} begins with", "and finishes with"),
    ("In the {thing}, the first symbol is", "and the last symbol is"),
    ("Write the {thing} so that it starts with", "and stops with"),
)

IOI_TEMPLATES: tuple[str, ...] = (
    "When {A} and {B} went to the {place}, {S} gave a {obj} to",
    "When {A} and {B} got to the {place}, {S} handed the {obj} to",
    "After {A} and {B} arrived at the {place}, {S} passed a {obj} to",
    "While {A} and {B} were at the {place}, {S} offered a {obj} to",
    "Then, {A} and {B} spent the day at the {place}. {S} gave a {obj} to",
    "Yesterday, {A} and {B} met at the {place}, and {S} threw a {obj} to",
    "On {day}, {A} and {B} cleaned the {place}. Afterwards, {S} brought a {obj} to",
    "The {place} was busy when {A} and {B} came in, so {S} showed the {obj} to",
)

IOI_ENDINGS: tuple[str, ...] = (
    ".", ".", " before leaving.", " with a smile.", " and went home.", " as a present.",
    " after a while.",
)

ACRONYM_PREFIXES: tuple[str, ...] = (
    "The", "According to the", "A report by the", "Members of the", "She works for the",
    "Funding from the", "He joined the", "Last year the", "A letter from the", "We visited the",
)

ACRONYM_TAILS: tuple[str, ...] = (
    ".", " said on {day}.", " was founded in {year}.", " is based near the {place}.",
    " has {n} members.", " opened a new {place}.", " met in {month}.",
)
