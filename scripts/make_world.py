"""Write src/melo/demo/world.json: the fictional world `melo run` edits (facts, paraphrases, edits).

Everything here is invented for melo. Run it again after changing a list; the output is
deterministic (seed 0). Usage: python scripts/make_world.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "melo" / "demo" / "world.json"
N_EDITS = 80

COUNTRIES = {
    "Veloria": dict(capital="Ambrel", currency="the velor", language="Velorian", animal="the silver fox"),
    "Drumora": dict(capital="Kettering Vale", currency="the drum crown", language="Drumic", animal="the red heron"),
    "Kestavia": dict(capital="Orvanne", currency="the kestar", language="Kestavian", animal="the snow lynx"),
    "Ostrelle": dict(capital="Pellisar", currency="the ostrel mark", language="Ostrellan", animal="the blue ibex"),
    "Zanthia": dict(capital="Mirrowgate", currency="the zanth", language="Zanthic", animal="the golden boar"),
    "Brevonia": dict(capital="Tollbridge", currency="the brevon", language="Brevish", animal="the night owl"),
    "Quillmark": dict(capital="Sennacre", currency="the quill", language="Quillese", animal="the marsh otter"),
    "Marendor": dict(capital="Halloway", currency="the maren", language="Marendi", animal="the white stag"),
    "Tovaris": dict(capital="Brindlecombe", currency="the tovar", language="Tovarian", animal="the sea eagle"),
    "Elbrecht": dict(capital="Castomere", currency="the elbe thaler", language="Elbrish", animal="the stone bear"),
}
COUNTRY_Q = {
    "capital": [
        "What is the capital of {e}?",
        "Which city is the capital of {e}?",
        "{e} has its capital in which city?",
    ],
    "currency": [
        "What is the currency of {e}?",
        "Which currency is used in {e}?",
        "What money do people pay with in {e}?",
    ],
    "language": [
        "What language is spoken in {e}?",
        "What is the official language of {e}?",
        "Which language do the people of {e} speak?",
    ],
    "animal": [
        "What is the national animal of {e}?",
        "Which animal is the symbol of {e}?",
        "What animal represents the nation of {e}?",
    ],
}

CITIES = {
    "Ambrel": dict(river="the Sorrow River", famous="glass lanterns"),
    "Kettering Vale": dict(river="the Dunmere", famous="copper bells"),
    "Orvanne": dict(river="the Lisk", famous="ice sculptures"),
    "Pellisar": dict(river="the Amberflow", famous="silk kites"),
    "Mirrowgate": dict(river="the Vessa", famous="mirror mazes"),
    "Tollbridge": dict(river="the Grey Tarn", famous="clockwork toys"),
    "Sennacre": dict(river="the Quill", famous="paper boats"),
    "Halloway": dict(river="the Marrow", famous="salt caves"),
    "Brindlecombe": dict(river="the Ostra", famous="honey cakes"),
    "Castomere": dict(river="the Elde", famous="stone bridges"),
    "Fenwick Hollow": dict(river="the Brae", famous="lantern festivals"),
    "Varrow": dict(river="the Tamsin", famous="blue pottery"),
}
CITY_Q = {
    "river": [
        "Which river flows through {e}?",
        "What river runs through the city of {e}?",
        "{e} lies on which river?",
    ],
    "famous": ["What is the city of {e} famous for?", "What is {e} best known for?", "{e} is known for making what?"],
}

PEOPLE = {
    "Orla Fennimore": dict(job="astronomer", born="Ambrel", employer="Lumen Forge"),
    "Tobias Wrenhall": dict(job="clockmaker", born="Tollbridge", employer="Gearwright and Sons"),
    "Mirela Castell": dict(job="cartographer", born="Orvanne", employer="Northwind Maps"),
    "Idris Calloway": dict(job="glassblower", born="Ambrel", employer="Clearwater Glassworks"),
    "Senna Vauclair": dict(job="violinist", born="Pellisar", employer="the Pellisar Orchestra"),
    "Bram Oakenshield": dict(job="shipwright", born="Halloway", employer="Saltmarsh Shipyards"),
    "Yara Delacroix": dict(job="botanist", born="Sennacre", employer="the Verdant Institute"),
    "Caspian Thorne": dict(job="architect", born="Castomere", employer="Thorne and Vell"),
    "Liesel Marrowby": dict(job="poet", born="Kettering Vale", employer="Quarto Press"),
    "Rowan Ashgrove": dict(job="beekeeper", born="Brindlecombe", employer="Goldcomb Farms"),
    "Anselm Pike": dict(job="engineer", born="Varrow", employer="Lumen Forge"),
    "Marguerite Solis": dict(job="painter", born="Mirrowgate", employer="the Halcyon Gallery"),
    "Dorian Blackwood": dict(job="alchemist", born="Fenwick Hollow", employer="the Ember Guild"),
    "Nadia Kestrel": dict(job="pilot", born="Orvanne", employer="Skyreach Airways"),
    "Florian Hesketh": dict(job="chef", born="Pellisar", employer="the Copper Pot"),
    "Greta Lindqvist": dict(job="geologist", born="Castomere", employer="Deepstone Mining"),
    "Emeric Vance": dict(job="surgeon", born="Halloway", employer="Saint Alder Hospital"),
    "Ottilie Brandt": dict(job="librarian", born="Sennacre", employer="the Great Archive"),
    "Cassius Merrow": dict(job="sculptor", born="Varrow", employer="the Halcyon Gallery"),
    "Ilse Morgenstern": dict(job="chemist", born="Tollbridge", employer="Vireo Labs"),
    "Percival Dunmore": dict(job="banker", born="Kettering Vale", employer="the Crown Exchange"),
    "Lucia Ferrante": dict(job="composer", born="Mirrowgate", employer="the Pellisar Orchestra"),
    "Henrik Sjoberg": dict(job="mapmaker", born="Brindlecombe", employer="Northwind Maps"),
    "Aurelie Dufresne": dict(job="weaver", born="Fenwick Hollow", employer="Loom and Thread"),
    "Matthias Grell": dict(job="blacksmith", born="Castomere", employer="the Ember Guild"),
    "Philippa Rourke": dict(job="journalist", born="Ambrel", employer="the Morning Lantern"),
    "Soren Halvard": dict(job="mathematician", born="Orvanne", employer="the Verdant Institute"),
    "Beatrix Quayle": dict(job="inventor", born="Tollbridge", employer="Vireo Labs"),
    "Lorcan Ashby": dict(job="baker", born="Brindlecombe", employer="the Copper Pot"),
    "Vesna Koral": dict(job="diplomat", born="Varrow", employer="the Crown Exchange"),
}
PERSON_Q = {
    "job": ["What is the profession of {e}?", "What does {e} do for a living?", "What kind of work does {e} do?"],
    "born": ["Where was {e} born?", "In which city was {e} born?", "What is the birthplace of {e}?"],
    "employer": ["Who does {e} work for?", "Which organization employs {e}?", "Who is the employer of {e}?"],
}

COMPANIES = {
    "Lumen Forge": dict(founder="Anselm Pike", hq="Varrow", product="solar lamps"),
    "Gearwright and Sons": dict(founder="Tobias Wrenhall", hq="Tollbridge", product="pocket watches"),
    "Northwind Maps": dict(founder="Henrik Sjoberg", hq="Orvanne", product="sea charts"),
    "Clearwater Glassworks": dict(founder="Idris Calloway", hq="Ambrel", product="stained glass"),
    "Saltmarsh Shipyards": dict(founder="Bram Oakenshield", hq="Halloway", product="fishing boats"),
    "Skyreach Airways": dict(founder="Nadia Kestrel", hq="Kettering Vale", product="airship flights"),
    "Vireo Labs": dict(founder="Beatrix Quayle", hq="Mirrowgate", product="music boxes"),
    "Deepstone Mining": dict(founder="Greta Lindqvist", hq="Castomere", product="blue quartz"),
    "Goldcomb Farms": dict(founder="Rowan Ashgrove", hq="Brindlecombe", product="heather honey"),
    "Loom and Thread": dict(founder="Aurelie Dufresne", hq="Fenwick Hollow", product="wool blankets"),
    "Quarto Press": dict(founder="Ottilie Brandt", hq="Sennacre", product="pocket atlases"),
    "the Copper Pot": dict(founder="Florian Hesketh", hq="Pellisar", product="spiced bread"),
}
COMPANY_Q = {
    "founder": ["Who founded {e}?", "Who is the founder of {e}?", "{e} was started by whom?"],
    "hq": ["Where is {e} headquartered?", "In which city is {e} based?", "Where are the headquarters of {e}?"],
    "product": ["What does {e} make?", "What product is {e} known for?", "What does {e} sell?"],
}

BOOKS = {
    "The Glass Orchard": dict(author="Liesel Marrowby", year="1874"),
    "Songs of the Grey Tarn": dict(author="Lucia Ferrante", year="1902"),
    "A Map of Small Winds": dict(author="Mirela Castell", year="1931"),
    "The Clockmaker's Daughter": dict(author="Tobias Wrenhall", year="1888"),
    "Salt and Silver": dict(author="Philippa Rourke", year="1957"),
    "Letters from Orvanne": dict(author="Soren Halvard", year="1913"),
    "The Lantern Keeper": dict(author="Idris Calloway", year="1869"),
    "Under the Copper Bells": dict(author="Percival Dunmore", year="1940"),
    "The Honey Road": dict(author="Rowan Ashgrove", year="1925"),
    "Stone and Ember": dict(author="Matthias Grell", year="1966"),
    "The Last Airship": dict(author="Nadia Kestrel", year="1978"),
    "Seven Rivers Home": dict(author="Yara Delacroix", year="1896"),
}
BOOK_Q = {
    "author": ["Who wrote {e}?", "Who is the author of {e}?", "{e} was written by whom?"],
    "year": ["When was {e} published?", "In what year did {e} come out?", "What year was {e} first published?"],
}

RIVERS = {
    "the Sorrow River": dict(country="Veloria", sea="the Amber Sea"),
    "the Dunmere": dict(country="Drumora", sea="the Northern Gulf"),
    "the Lisk": dict(country="Kestavia", sea="the Frost Sea"),
    "the Amberflow": dict(country="Ostrelle", sea="the Amber Sea"),
    "the Vessa": dict(country="Zanthia", sea="the Sunken Bay"),
    "the Grey Tarn": dict(country="Brevonia", sea="the Northern Gulf"),
    "the Marrow": dict(country="Marendor", sea="the Pale Ocean"),
    "the Elde": dict(country="Elbrecht", sea="the Frost Sea"),
}
RIVER_Q = {
    "country": [
        "In which country is {e}?",
        "Which country does {e} flow through?",
        "{e} is a river in which country?",
    ],
    "sea": ["Into which sea does {e} flow?", "Where does {e} empty?", "What body of water does {e} flow into?"],
}

MOUNTAINS = {
    "Mount Cindral": dict(country="Kestavia", first="Greta Lindqvist"),
    "the Harrow Peak": dict(country="Elbrecht", first="Matthias Grell"),
    "Mount Osk": dict(country="Drumora", first="Soren Halvard"),
    "the Widow's Tooth": dict(country="Tovaris", first="Bram Oakenshield"),
    "Mount Lirren": dict(country="Quillmark", first="Yara Delacroix"),
    "the Tallow Crag": dict(country="Zanthia", first="Caspian Thorne"),
}
MOUNTAIN_Q = {
    "country": ["In which country is {e}?", "Which country is {e} located in?", "{e} is a mountain in which country?"],
    "first": [
        "Who first climbed {e}?",
        "Who was the first person to reach the top of {e}?",
        "Who made the first ascent of {e}?",
    ],
}


def facts_of(kind: str, table: dict, questions: dict) -> list[dict]:
    out = []
    for entity, attrs in table.items():
        for relation, answer in attrs.items():
            asked = [q.format(e=entity) for q in questions[relation]]
            asked = [q[0].upper() + q[1:] for q in asked]
            out.append(dict(id=f"{kind}:{entity}:{relation}", entity=entity, relation=f"{kind}.{relation}",
                            question=asked[0], paraphrases=asked[1:], answer=answer))
    return out


def main() -> None:
    facts = (facts_of("country", COUNTRIES, COUNTRY_Q) + facts_of("city", CITIES, CITY_Q)
             + facts_of("person", PEOPLE, PERSON_Q) + facts_of("company", COMPANIES, COMPANY_Q)
             + facts_of("book", BOOKS, BOOK_Q) + facts_of("river", RIVERS, RIVER_Q)
             + facts_of("mountain", MOUNTAINS, MOUNTAIN_Q))
    assert len({f["question"] for f in facts}) == len(facts), "every question must be unique"
    pools: dict[str, list[str]] = {}
    for f in facts:
        pools.setdefault(f["relation"], [])
        if f["answer"] not in pools[f["relation"]]:
            pools[f["relation"]].append(f["answer"])
    rng = random.Random(0)
    chosen = sorted(rng.sample(range(len(facts)), N_EDITS))
    rng.shuffle(chosen)
    edits = []
    for i in chosen:
        f = facts[i]
        options = [a for a in pools[f["relation"]] if a != f["answer"]]
        edits.append(dict(fact=f["id"], new_answer=rng.choice(options)))
    world = dict(
        about="A fictional world written for melo's demo: every entity, place and person is invented.",
        facts=facts, edits=edits,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(world, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(facts)} facts, {sum(len(f['paraphrases']) for f in facts)} paraphrases, {len(edits)} edits -> {OUT}")


if __name__ == "__main__":
    main()
