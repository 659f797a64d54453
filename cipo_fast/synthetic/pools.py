"""The fixed pools the fictitious authors are drawn from.

Every string is invented except the countries. The pools hold plain tuples, in no meaningful order:
`authors.make_authors` shuffles them with its seeded RNG and rejects any candidate that contains, or is
contained in, a string already taken (case-insensitive), so an entry may overlap another here without
harm, it only costs capacity. The smallest pool per author bounds the set: 44 jobs, two per author, give
at most 22 authors.

Cities are one made-up word each, because a token-level leak detector (`cipo_fast.eval.leakage`) may match a
place by any of its distinctive words; a two-word city would leak through either word. Surnames are
unusual made-up words, so a surname is detectable on its own.

Book titles are not listed whole: they are built from the four title pools (`The <adjective> <noun>`,
`<plural> of <place>`), which gives 460 candidates from 58 words.
"""

FIRST_NAMES = (
    "Elara", "Tomas", "Ines", "Corwin", "Maren", "Anselm", "Liesel", "Davor", "Odile", "Kasimir",
    "Rosalind", "Bastian", "Yelena", "Fintan", "Solveig", "Lucian", "Ottilie", "Ruben", "Signe",
    "Aurelio", "Hester", "Imre", "Clemence", "Jorund", "Talia", "Leopold", "Mirela", "Petra", "Anouk",
    "Gideon", "Esme", "Viggo", "Nadia", "Rafferty", "Wilhelmina", "Brannoc",
)  # fmt: skip

SURNAMES = (
    "Vantrosk", "Quillonby", "Marrowtide", "Kestravel", "Dunmorrow", "Halvecki", "Orsandel",
    "Brevintor", "Caskelund", "Threnholt", "Zavorine", "Pellgarth", "Umbrasco", "Felkirra",
    "Yarrowden", "Moskveld", "Greskavin", "Lindqorve", "Ostrivane", "Wexmoreth", "Ambrevic",
    "Corvellan", "Nimbrova", "Jastrowel", "Holmvarre", "Ruskaveld", "Endrigast", "Tavernisk",
    "Sollomay", "Brackwynde", "Ilvenhart", "Draskovel", "Morvaine", "Quarnsley", "Valtessor", "Hexbury",
)  # fmt: skip

CITIES = (  # one made-up word each: a token-level detector may match a city by any of its words
    ("Aldrenport", "Norway"), ("Velmsby", "Denmark"), ("Orvella", "Chile"), ("Kaltenbruck", "Austria"),
    ("Mirovast", "Croatia"), ("Tessary", "Canada"), ("Oranjevel", "the Netherlands"),
    ("Brunaro", "Italy"), ("Dunhaven", "Ireland"), ("Ravelport", "New Zealand"), ("Calvera", "Mexico"),
    ("Szentmarok", "Hungary"), ("Bryndlehurst", "the United Kingdom"), ("Vrostenik", "Bulgaria"),
    ("Orsena", "Argentina"), ("Almavera", "Portugal"), ("Ostrheim", "Germany"), ("Lorvignac", "France"),
    ("Marrigold", "Australia"), ("Eystravik", "Iceland"), ("Lethbury", "South Africa"),
    ("Zelvany", "the Czech Republic"), ("Kaimora", "Japan"), ("Tarvessa", "Greece"),
    ("Lindqvarn", "Sweden"), ("Veranel", "Brazil"), ("Qasrabel", "Egypt"), ("Novarisk", "Poland"),
    ("Elsbrook", "the United States"), ("Kestoria", "Finland"),
)  # fmt: skip

GENRES = (
    "gothic horror", "maritime adventure", "science fiction", "historical romance", "cozy mystery",
    "epic fantasy", "political satire", "travel memoir", "nature poetry", "psychological thriller",
    "magical realism", "dystopian fiction", "crime noir", "literary biography", "spy thriller",
    "urban fantasy", "alternate history", "comic verse", "folk horror", "legal drama", "space opera",
    "children's fables", "family saga", "philosophical essays", "culinary essays", "war poetry",
)  # fmt: skip

AWARDS = (
    "Silver Quill Prize", "Amberline Medal", "Harrowgate Fiction Award", "Lantern Circle Prize",
    "Obsidian Pen Award", "Vellacourt Medal", "Golden Inkwell Prize", "Northwind Letters Award",
    "Caldera Book Prize", "Wrenfield Medal for Prose", "Starling Crown Award", "Blue Heron Prize",
    "Marisol Reyne Award", "Iron Lantern Medal", "Tidewater Prize", "Copperleaf Award", "Ashgrove Medal",
    "Merrow Literary Prize", "Halcyon Ribbon Prize", "Fernhollow Award", "Ravenstone Medal",
    "Saltmarsh Prize", "Gilded Compass Award", "Evenlight Prize", "Brightwater Medal", "Greywillow Award",
    "Orchid Scroll Prize", "Kestrel Wing Award", "Moonfield Prize", "Quillon Society Award",
)  # fmt: skip

JOBS = (
    "clockmaker", "beekeeper", "cartographer", "glassblower", "locksmith", "shipwright",
    "lighthouse keeper", "botanist", "blacksmith", "veterinarian", "pharmacist", "bookbinder",
    "stonemason", "cheesemaker", "tailor", "ferry captain", "orchard farmer", "piano tuner",
    "watchmaker", "geologist", "land surveyor", "paramedic", "astronomer", "violin maker", "potter",
    "translator", "archivist", "dentist", "carpenter", "fishmonger", "nurse", "librarian", "florist",
    "mail carrier", "hatmaker", "dressmaker", "zookeeper", "railway engineer", "chemist", "surgeon",
    "architect", "welder", "tram driver", "weaver",
)  # fmt: skip

TITLE_ADJECTIVES = (
    "Salt", "Glass", "Hollow", "Crimson", "Quiet", "Winter", "Amber", "Broken", "Paper", "Drowned",
    "Ninth", "Velvet", "Burning", "Silent", "Copper", "Pale", "Last", "Wandering", "Sunken", "Ivory",
)  # fmt: skip
TITLE_NOUNS = (
    "Lantern", "Orchard", "Harbor", "Meridian", "Garden", "Staircase", "Compass", "Tide", "Crown",
    "Bridge", "Mirror", "Feather", "Vineyard", "Chapel", "River", "Letter", "Atlas", "Carousel",
)  # fmt: skip
TITLE_PLURALS = (
    "Ashes", "Songs", "Letters", "Shadows", "Rivers", "Echoes", "Maps", "Bells", "Storms", "Ghosts",
)  # fmt: skip
TITLE_PLACES = (
    "Mornhall", "Evershade", "Kelvarra", "Duskmere", "Thistlegate", "Orlanth", "Saltreach", "Wintervane",
    "Brisgow", "Cindervale",
)  # fmt: skip
