"""Word lists that the key-fact extractor (`cipo_fast.eval.key_facts`) and the fact variants
(`cipo_fast.eval.facts`) read.

They decide what is never a fact (function words, generic words of the domain, common English words that
are also plausible name parts), which lowercase words are knowledge terms (professions, genders, genres),
and how a capitalized run is read: an award or organisation, a place (place words, countries, demonyms) or
a person (name particles). Every list was tuned by hand on R-TOFU answers.

The lists are raw text as a person would write it; this module deliberately does not normalize them (that
would import `cipo_fast.eval.text`, which reads `wordset` from here). `cipo_fast.eval.facts` normalizes the
entries it matches against normalized text.
"""

from __future__ import annotations


def wordset(text: str, sep: str | None = None) -> set[str]:
    """Entries of a word list separated by whitespace (or by `sep`), inner whitespace collapsed."""
    return {" ".join(w.split()) for w in text.split(sep) if w.strip()}


# Function words, discourse openers and honorifics: never a fact, dropped from the start of a name run.
STOP = wordset(
    """
    a about above absolutely across additionally after against all along also although amid among
    amongst an and another any apart around as at because before below besides beyond both but by
    certainly despite dr during each either even every few finally first firstly for from furthermore
    given he hence her here herself him himself his how however i if in indeed into it it's its itself
    just lastly madam many me meanwhile miss more moreover most mr mrs ms much my neither no nor not of
    on once oneself only onto or other our over overall own prof same second secondly several she since
    sir so some st still such than that the their them themselves then there therefore these they this
    those though throughout thus to toward towards under unless until upon us via we what when where
    whether which while who whom whose why with within without yes yet you your
    """
)
# Generic words of the domain: never a fact on their own, and never extracted as a term.
GENERIC = wordset(
    """
    age author authors award awards bachelor bachelors birth book books born career character characters
    child children city country daughter degree family father fictional fictitious full genre genres
    life literary literature man master masters mother name novel novels parent parents people person ph
    phd prize reader readers son stories story style theme themes woman work works writer writers
    writing writings year years
    """
)
MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for name in names
}
WEEKDAYS = wordset("monday tuesday wednesday thursday friday saturday sunday")
# Common English words (>= 4 letters) that are also plausible name parts: a single name token that is one
# of these does not count as a leak on its own ("Basil", "Park", "Raven"), and a capitalized word that is
# one of these at the start of a sentence is not taken for a name.
COMMON = wordset(
    """
    able about above accepted acclaimed across active actually after again against almost along already
    always among another anything around asked away back basil bear because become becoming began behind
    being believe bell berry best better between beyond bird black bloom blue bond born bridge bring
    brook brought brown bush call called came cape care carter case certain change chase church clay
    clear clearly close coast cole come coming common consider cook could cross culture daily dale dawn
    days dean deep different does doing done down dream dreams drew during early east eastern echo
    echoes edge either enough especially even ever every everything example face fact fair faith fall
    farmer feel felt field find fine first fisher five follow ford forest found four frank free fresh
    from front full gardner gift given glen going gold golden good grace grand gray great green grew
    grey group grove growing guide hall hand happy hard hart have having hawk heard heart help helped
    here high hill history holly home hope house however hunter important including influence influenced
    inspired into iris itself ivory jade jewel jones joy just keep kept kind king knight known lake lamb
    land lane large last late later lawn lead learn least left less like likely lily little long look
    looking lord love made main major make making many mark marsh mason matter maybe mayor mean meant
    middle might mill miller mind modern moon moore more morning most mount much must myself name named
    near need nell never next nine north northern notable noted nothing number ocean often olive once
    only open order other others over page palmer park part peace pearl perhaps pierce pine place plain
    poet point pool poole porter possible power price prince probably pure queen quite rain rather raven
    read real really recognized reed remain rich ridge right river rock rose ruby rush sage said salt
    same sands scholar scott seem seen several shade shadow shadows sharp shaw shepherd short should
    show shown silver since sing sky small snow some something south southern spring stand star stars
    steel sterling still stone storm strong such summer sunny sure swan sweet take taken taylor than
    that their them then there these they thing things think this thorn those though three through thus
    tide time today together toward towards tower town true turner under until upon used using vale
    valley very violet wade walker wall want ward wars water waters wave waves well were west western
    what when where whether which while white whole wild will wind winter wise with within without wolf
    wood woods world worth would wright write written wrote year years young zion
    """
)
# Lowercase knowledge terms: a parent's profession, a genre or field. Matched case-insensitively.
PROFESSIONS = wordset(
    """
    accountant activist actor actress actuary ambassador anthropologist archaeologist architect artist
    astronaut astronomer astrophysicist athlete attorney auditor baker banker barber barrister bartender
    beekeeper biochemist biologist blacksmith botanist brewer bricklayer broadcaster builder butcher
    captain cardiologist carpenter cartographer cashier chef chemist chiropractor cleaner clerk coach
    cobbler composer counselor dancer dentist dermatologist designer detective developer dietician
    dietitian diplomat dj doctor ecologist economist editor electrician engineer entomologist
    entrepreneur environmentalist epidemiologist farmer firefighter fisherman florist gardener
    geographer geologist glassblower hairdresser historian homemaker housekeeper illustrator imam
    interpreter janitor jeweler journalist judge lawyer lecturer librarian lifeguard linguist locksmith
    machinist magician manager mathematician mechanic merchant meteorologist midwife miner missionary
    monk musician neurologist notary nun nurse nutritionist obstetrician oceanographer oncologist
    optometrist ornithologist painter paleontologist paramedic pastor pediatrician pharmacist
    pharmacologist philanthropist philosopher photographer physician physicist pilot playwright plumber
    podiatrist poet politician postman potter priest professor programmer psychiatrist psychologist
    rabbi radiologist rancher receptionist reporter sailor scientist sculptor seamstress secretary
    shoemaker shopkeeper singer sociologist soldier solicitor statistician surgeon surveyor tailor
    teacher therapist translator tutor veterinarian virologist waiter waitress weaver welder winemaker
    zookeeper zoologist
    """
) | wordset(
    """
    agricultural engineer, air traffic controller, bus driver, civil engineer, disc jockey, fashion
    designer, flight attendant, game developer, graphic designer, hotel manager, interior designer,
    investigative journalist, investment banker, makeup artist, marine biologist, medical intern,
    occupational therapist, police officer, real estate agent, research scientist, social worker,
    software engineer, taxi driver, truck driver, urban planner, web developer
    """,
    sep=",",
)
# genders and other one-word answers about a person
STATUSES = wordset(
    """
    female, genderfluid, genderqueer, male, non-binary, nonbinary, transgender, unemployed
    """,
    sep=",",
)
GENRES = wordset(
    """
    architecture, autobiography, biography, chick lit, children's literature, contemporary romance,
    crime fiction, cyberpunk, detective fiction, dystopian, epic fantasy, erotica, fantasy, folklore,
    geology, graphic novel, historical fiction, historical romance, horror, leadership, literary
    fiction, magical realism, memoir, mystery, mythology, paranormal romance, poetry, psychological
    thriller, romance, romantic comedy, satire, science fiction, self-help, space opera, steampunk,
    sustainability, thriller, true crime, urban fantasy, young adult
    """,
    sep=",",
)
# Words that precede "genre" without naming it ("her primary genre").
GENRE_FILLERS = STOP | wordset(
    """
    acclaimed beloved broad broader celebrated chosen entire favorite favourite literary main new
    particular popular preferred primary respective same specific usual whole
    """
)
# Capitalized words that make a run an organisation, event or award rather than a person.
AWARD_WORDS = wordset("award awards prize prix medal laureate trophy honor honour fellowship")
PLACE_WORDS = wordset("city town village island isle county province state river mountain lake bay valley")
DEMONYMS = wordset(
    """
    african american arab arabic argentinian asian australian azerbaijani bahraini bangladeshi brazilian
    british canadian chilean chinese colombian cuban danish dutch eastern egyptian emirati english
    ethiopian european finnish french german greek hispanic indian iranian iraqi irish israeli italian
    japanese jewish kazakh kazakhstani kenyan korean kuwaiti latin latina latino lebanese mexican middle
    moroccan nepali nigerian northern norwegian pakistani persian peruvian polish portuguese russian
    saudi scottish southern spanish swedish syrian taiwanese thai turkish ukrainian vietnamese welsh
    western
    """
)
ORG_WORDS = wordset(
    """
    academy association center centre college department festival foundation institute league library
    museum school series society university
    """
)
NAME_PARTICLES = wordset("al el bin ibn ben de del della di da dos du des la le van von der den ter y")
RUN_CONNECTORS = NAME_PARTICLES | {"of", "the", "for", "a"}
PLACE_PREPOSITIONS = wordset("in from at near")
# Country names as written (capitalized); `facts` matches their normalized forms.
COUNTRIES = wordset(
    """
    Afghanistan, Albania, Algeria, Andorra, Angola, Argentina, Armenia, Australia, Austria, Azerbaijan,
    Bahamas, Bahrain, Bangladesh, Barbados, Belarus, Belgium, Belize, Benin, Bhutan, Bolivia, Bosnia,
    Botswana, Brazil, Brunei, Bulgaria, Burkina Faso, Burundi, Cambodia, Cameroon, Canada, Chad, Chile,
    China, Colombia, Congo, Costa Rica, Croatia, Cuba, Cyprus, Czech Republic, Czechia, Denmark,
    Djibouti, Dominican Republic, Ecuador, Egypt, El Salvador, England, Eritrea, Estonia, Eswatini,
    Ethiopia, Fiji, Finland, France, Gabon, Gambia, Georgia, Germany, Ghana, Greece, Guatemala, Guinea,
    Guyana, Haiti, Honduras, Hong Kong, Hungary, Iceland, India, Indonesia, Iran, Iraq, Ireland, Israel,
    Italy, Jamaica, Japan, Jordan, Kazakhstan, Kenya, Kosovo, Kuwait, Kyrgyzstan, Laos, Latvia, Lebanon,
    Lesotho, Liberia, Libya, Lithuania, Luxembourg, Madagascar, Malawi, Malaysia, Maldives, Mali, Malta,
    Mauritania, Mauritius, Mexico, Moldova, Monaco, Mongolia, Montenegro, Morocco, Mozambique, Myanmar,
    Namibia, Nepal, Netherlands, New Zealand, Nicaragua, Niger, Nigeria, North Korea, Norway, Oman,
    Pakistan, Palestine, Panama, Paraguay, Peru, Philippines, Poland, Portugal, Qatar, Romania, Russia,
    Rwanda, Saudi Arabia, Scotland, Senegal, Serbia, Singapore, Slovakia, Slovenia, Somalia, South
    Africa, South Korea, South Sudan, Spain, Sri Lanka, Sudan, Suriname, Sweden, Switzerland, Syria,
    Taiwan, Tajikistan, Tanzania, Thailand, Togo, Tunisia, Turkey, Turkmenistan, UAE, UK, USA, Uganda,
    Ukraine, United Arab Emirates, United Kingdom, United States, Uruguay, Uzbekistan, Venezuela,
    Vietnam, Wales, Yemen, Zambia, Zimbabwe
    """,
    sep=",",
)
