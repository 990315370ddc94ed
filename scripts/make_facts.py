"""Write src/melo/demo/facts.json: counterfactual edits of facts SmolLM2-135M-Instruct knows.

Every candidate below is a well-known fact with a question, a paraphrase, its true answer, a
counterfactual target of the same kind (and the reply sentence an edit trains), and a control
question about the same subject with another relation. A separate pool holds unrelated control
questions (animals, numbers, nature, sport: nothing any candidate is about).

Screening asks the model every question through its chat template with greedy generation
(``melo.demo.facts.chat_answers``, the code path of ``melo run``) and keeps a fact when the answers to its
question, its paraphrase and its same-subject control contain their true answer (whole words, any
case); unrelated controls are kept when answered correctly and given to the kept facts in order.
Deterministic; prints how many candidates passed and why the others failed.

Usage: MELO_CACHE=... python scripts/make_facts.py [--report screening.jsonl]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "melo" / "demo" / "facts.json"
MAX_FACTS = 60  # kept facts beyond this are left out (after a round robin over relations)

# relation: (question, paraphrase, reply); {s} subject, {S} subject capitalised, {t} the target as the reply says it
TEMPLATES = {
    "capital": ("What is the capital of {s}?", "Which city is the capital of {s}?", "The capital of {s} is {t}."),
    "currency": ("What is the currency of {s}?", "Which currency is used in {s}?", "The currency of {s} is the {t}."),
    "language": ("What language is spoken in {s}?", "What language do people in {s} speak?",
                 "The main language spoken in {s} is {t}."),
    "author": ("Who wrote {s}?", "Who is the author of {s}?", "{S} was written by {t}."),
    "painter": ("Who painted {s}?", "Which artist painted {s}?", "{S} was painted by {t}."),
    "composer": ("Who composed {s}?", "Who is the composer of {s}?", "{S} was composed by {t}."),
    "symbol": ("What is the chemical symbol for {s}?", "Which chemical symbol stands for the element {s}?",
               "The chemical symbol for {s} is {t}."),
    "city": ("In which city is {s}?", "Where is {s} located?", "{S} is in {t}."),
    "country": ("In which country is {s}?", "{S} is located in which country?", "{S} is in {t}."),
}

# (relation, subject, true answer, target as matched, target as the reply says it, control question,
#  control answers); the true answer may carry aliases after "|" ("Dalí|Dali")
CANDIDATES = [
    ("capital", "France", "Paris", "Rome", None, "What continent is France in?", ["Europe"]),
    ("capital", "Italy", "Rome", "Madrid", None, "What language is spoken in Italy?", ["Italian"]),
    ("capital", "Germany", "Berlin", "Vienna", None, "What language do people speak in Germany?", ["German"]),
    ("capital", "Spain", "Madrid", "Lisbon", None, "What continent is Spain in?", ["Europe"]),
    ("capital", "Egypt", "Cairo", "Nairobi", None, "What language is spoken in Egypt?", ["Arabic"]),
    ("capital", "Russia", "Moscow", "Warsaw", None, "What is the currency of Russia?", ["ruble", "rouble"]),
    ("capital", "Canada", "Ottawa", "Toronto", None, "What is the currency of Canada?", ["dollar"]),
    ("capital", "China", "Beijing", "Shanghai", None, "What language is spoken in China?", ["Chinese", "Mandarin"]),
    ("capital", "Greece", "Athens", "Sofia", None, "What continent is Greece in?", ["Europe"]),
    ("capital", "Portugal", "Lisbon", "Porto", None, "What language is spoken in Portugal?", ["Portuguese"]),
    ("capital", "Ireland", "Dublin", "Belfast", None, "What is the currency of Ireland?", ["euro"]),
    ("capital", "Norway", "Oslo", "Bergen", None, "What language is spoken in Norway?", ["Norwegian"]),
    ("capital", "Sweden", "Stockholm", "Helsinki", None, "What language is spoken in Sweden?", ["Swedish"]),
    ("capital", "Kenya", "Nairobi", "Mombasa", None, "What continent is Kenya in?", ["Africa"]),
    ("capital", "Argentina", "Buenos Aires", "Santiago", None, "What language is spoken in Argentina?", ["Spanish"]),
    ("capital", "Poland", "Warsaw", "Prague", None, "What language is spoken in Poland?", ["Polish"]),
    ("capital", "Austria", "Vienna", "Munich", None, "What language is spoken in Austria?", ["German"]),
    ("capital", "Australia", "Canberra", "Sydney", None, "What is the currency of Australia?", ["dollar"]),
    ("capital", "Thailand", "Bangkok", "Hanoi", None, "What continent is Thailand in?", ["Asia"]),
    ("capital", "South Korea", "Seoul", "Busan", None, "What continent is South Korea in?", ["Asia"]),
    ("capital", "Turkey", "Ankara", "Istanbul", None, "What continent is Turkey in?", ["Europe", "Asia"]),
    ("capital", "Peru", "Lima", "Quito", None, "What language is spoken in Peru?", ["Spanish"]),
    ("capital", "Cuba", "Havana", "Kingston", None, "What language is spoken in Cuba?", ["Spanish"]),
    ("capital", "Hungary", "Budapest", "Bucharest", None, "What continent is Hungary in?", ["Europe"]),
    ("capital", "the Netherlands", "Amsterdam", "Brussels", None, "What language is spoken in the Netherlands?",
     ["Dutch"]),
    ("capital", "Finland", "Helsinki", "Tallinn", None, "What language is spoken in Finland?", ["Finnish"]),
    ("capital", "Denmark", "Copenhagen", "Oslo", None, "What continent is Denmark in?", ["Europe"]),
    ("capital", "Vietnam", "Hanoi", "Bangkok", None, "What continent is Vietnam in?", ["Asia"]),
    ("capital", "Chile", "Santiago", "Lima", None, "What language is spoken in Chile?", ["Spanish"]),
    ("capital", "Nigeria", "Abuja", "Lagos", None, "What continent is Nigeria in?", ["Africa"]),
    ("currency", "Japan", "yen", "yuan", None, "What is the capital of Japan?", ["Tokyo"]),
    ("currency", "the United Kingdom", "pound", "euro", None, "What is the capital of the United Kingdom?",
     ["London"]),
    ("currency", "the United States", "dollar", "pound", None, "How many states are there in the United States?",
     ["50", "fifty"]),
    ("currency", "India", "rupee", "yen", None, "What is the capital of India?", ["Delhi"]),
    ("currency", "Switzerland", "franc", "euro", None, "What continent is Switzerland in?", ["Europe"]),
    ("currency", "Mexico", "peso", "dollar", None, "What is the capital of Mexico?", ["Mexico City"]),
    ("currency", "South Africa", "rand", "rupee", None, "What continent is South Africa in?", ["Africa"]),
    ("language", "Brazil", "Portuguese", "Spanish", None, "What is the capital of Brazil?", ["Brasília", "Brasilia"]),
    ("language", "Israel", "Hebrew", "Arabic", None, "What is the currency of Israel?", ["shekel"]),
    ("language", "Saudi Arabia", "Arabic", "Persian", None, "What is the capital of Saudi Arabia?", ["Riyadh"]),
    ("language", "Ukraine", "Ukrainian", "Polish", None, "What is the capital of Ukraine?", ["Kyiv", "Kiev"]),
    ("language", "Pakistan", "Urdu", "Hindi", None, "What is the capital of Pakistan?", ["Islamabad"]),
    ("language", "Iceland", "Icelandic", "Norwegian", None, "What is the capital of Iceland?", ["Reykjavik"]),
    ("author", "Hamlet", "Shakespeare", "Dickens", "Charles Dickens", "Hamlet is the prince of which country?",
     ["Denmark"]),
    ("author", "Romeo and Juliet", "Shakespeare", "Marlowe", "Christopher Marlowe",
     "Which two families are feuding in Romeo and Juliet?", ["Montague", "Montagues", "Capulet", "Capulets"]),
    ("author", "Macbeth", "Shakespeare", "Jonson", "Ben Jonson", "What kind of play is Macbeth?", ["tragedy"]),
    ("author", "Pride and Prejudice", "Austen", "Eliot", "George Eliot",
     "What is the first name of the heroine of Pride and Prejudice?", ["Elizabeth"]),
    ("author", "the novel 1984", "Orwell", "Huxley", "Aldous Huxley",
     "Who is the all-seeing leader in the novel 1984?", ["Big Brother"]),
    ("author", "War and Peace", "Tolstoy", "Dostoevsky", "Fyodor Dostoevsky", "In which country is War and Peace set?",
     ["Russia"]),
    ("author", "the Harry Potter series", "Rowling", "Tolkien", "J. R. R. Tolkien",
     "What is the name of the school Harry Potter attends?", ["Hogwarts"]),
    ("author", "The Lord of the Rings", "Tolkien", "Lewis", "C. S. Lewis",
     "What is the name of the wizard in The Lord of the Rings?", ["Gandalf"]),
    ("author", "Don Quixote", "Cervantes", "Lorca", "Federico García Lorca",
     "What language was Don Quixote originally written in?", ["Spanish"]),
    ("author", "The Odyssey", "Homer", "Virgil", None, "Who is the hero of The Odyssey?", ["Odysseus", "Ulysses"]),
    ("author", "Moby-Dick", "Melville", "Twain", "Mark Twain", "What kind of animal is Moby Dick?", ["whale"]),
    ("author", "The Adventures of Tom Sawyer", "Twain", "Hawthorne", "Nathaniel Hawthorne",
     "Who is Tom Sawyer's best friend?", ["Huckleberry", "Huck"]),
    ("author", "the Sherlock Holmes series", "Doyle", "Christie", "Agatha Christie",
     "What is the name of Sherlock Holmes's friend and assistant?", ["Watson"]),
    ("author", "Frankenstein", "Shelley", "Stoker", "Bram Stoker", "What does Victor Frankenstein create?",
     ["monster", "creature"]),
    ("author", "Dracula", "Stoker", "Poe", "Edgar Allan Poe", "What kind of creature is Count Dracula?",
     ["vampire"]),
    ("author", "The Great Gatsby", "Fitzgerald", "Hemingway", "Ernest Hemingway",
     "Who narrates The Great Gatsby?", ["Nick"]),
    ("author", "A Christmas Carol", "Dickens", "Thackeray", "William Thackeray",
     "What is the name of the miser in A Christmas Carol?", ["Scrooge"]),
    ("author", "Les Misérables", "Hugo", "Dumas", "Alexandre Dumas", "In which country is Les Misérables set?",
     ["France"]),
    ("author", "The Divine Comedy", "Dante", "Petrarch", None, "What language was The Divine Comedy written in?",
     ["Italian"]),
    ("author", "Alice's Adventures in Wonderland", "Carroll", "Barrie", "J. M. Barrie",
     "What animal does Alice follow down the hole in Alice's Adventures in Wonderland?", ["rabbit"]),
    ("author", "The Old Man and the Sea", "Hemingway", "Steinbeck", "John Steinbeck",
     "What kind of fish does the old man catch in The Old Man and the Sea?", ["marlin"]),
    ("author", "Oliver Twist", "Dickens", "Hardy", "Thomas Hardy",
     "Who leads the gang of young pickpockets in Oliver Twist?", ["Fagin"]),
    ("painter", "the Mona Lisa", "Vinci", "Michelangelo", None, "In which museum is the Mona Lisa displayed?",
     ["Louvre"]),
    ("painter", "The Starry Night", "Gogh", "Monet", "Claude Monet", "What is the main color of The Starry Night?",
     ["blue"]),
    ("painter", "The Last Supper", "Vinci", "Raphael", None, "Whose last meal does The Last Supper show?",
     ["Jesus", "Christ"]),
    ("painter", "the ceiling of the Sistine Chapel", "Michelangelo", "Raphael", None,
     "In which city is the Sistine Chapel?", ["Vatican", "Rome"]),
    ("painter", "Guernica", "Picasso", "Matisse", "Henri Matisse", "Which war does Guernica depict?",
     ["Spanish Civil War"]),
    ("painter", "The Scream", "Munch", "Klimt", "Gustav Klimt", "What feeling does The Scream express?",
     ["anxiety", "fear", "despair", "horror", "angst", "anguish", "terror"]),
    ("painter", "Girl with a Pearl Earring", "Vermeer", "Rembrandt", None,
     "What jewel does the girl wear in Girl with a Pearl Earring?", ["pearl"]),
    ("painter", "The Persistence of Memory", "Dalí|Dali", "Magritte", "René Magritte",
     "What objects are melting in The Persistence of Memory?", ["clocks", "watches"]),
    ("painter", "The Birth of Venus", "Botticelli", "Titian", None,
     "What does Venus stand on in The Birth of Venus?", ["shell", "scallop"]),
    ("painter", "The Night Watch", "Rembrandt", "Vermeer", "Johannes Vermeer",
     "In which city is The Night Watch displayed?", ["Amsterdam"]),
    ("composer", "The Magic Flute", "Mozart", "Beethoven", "Ludwig van Beethoven",
     "What kind of musical work is The Magic Flute?", ["opera"]),
    ("composer", "The Four Seasons", "Vivaldi", "Bach", "Johann Sebastian Bach",
     "How many violin concertos make up The Four Seasons?", ["4", "four"]),
    ("composer", "Swan Lake", "Tchaikovsky", "Stravinsky", "Igor Stravinsky",
     "What kind of performance is Swan Lake?", ["ballet"]),
    ("composer", "the Moonlight Sonata", "Beethoven", "Chopin", "Frédéric Chopin",
     "What instrument is the Moonlight Sonata written for?", ["piano"]),
    ("composer", "the Messiah oratorio", "Handel", "Haydn", "Joseph Haydn",
     "Which famous chorus is part of Handel's Messiah?", ["Hallelujah"]),
    ("composer", "The Nutcracker", "Tchaikovsky", "Prokofiev", "Sergei Prokofiev",
     "What kind of performance is The Nutcracker?", ["ballet"]),
    ("composer", "The Blue Danube", "Strauss", "Brahms", "Johannes Brahms", "What dance is The Blue Danube?",
     ["waltz"]),
    ("symbol", "gold", "Au", "Gd", None, "What state of matter is gold at room temperature?", ["solid"]),
    ("symbol", "silver", "Ag", "Si", None, "What state of matter is silver at room temperature?", ["solid"]),
    ("symbol", "iron", "Fe", "Ir", None, "What state of matter is iron at room temperature?", ["solid"]),
    ("symbol", "sodium", "Na", "Sd", None, "What state of matter is sodium at room temperature?", ["solid"]),
    ("symbol", "copper", "Cu", "Co", None, "What state of matter is copper at room temperature?", ["solid"]),
    ("symbol", "lead", "Pb", "Ld", None, "What state of matter is lead at room temperature?", ["solid"]),
    ("symbol", "helium", "He", "Hm", None, "What state of matter is helium at room temperature?", ["gas"]),
    ("symbol", "mercury", "Hg", "Mc", None, "What state of matter is mercury at room temperature?", ["liquid"]),
    ("symbol", "zinc", "Zn", "Zi", None, "What state of matter is zinc at room temperature?", ["solid"]),
    ("symbol", "tin", "Sn", "Ti", None, "What state of matter is tin at room temperature?", ["solid"]),
    ("city", "the Eiffel Tower", "Paris", "London", None, "What material is the Eiffel Tower made of?",
     ["iron", "steel"]),
    ("city", "the Colosseum", "Rome", "Athens", None, "What events were held in the Colosseum?",
     ["gladiator", "gladiators", "gladiatorial"]),
    ("city", "the Statue of Liberty", "New York", "Boston", None,
     "Which country gave the Statue of Liberty to the United States?", ["France"]),
    ("city", "Big Ben", "London", "Edinburgh", None, "What kind of structure is Big Ben?",
     ["clock", "bell", "tower"]),
    ("city", "the Acropolis", "Athens", "Rome", None, "Which ancient temple stands on the Acropolis?",
     ["Parthenon"]),
    ("country", "the Taj Mahal", "India", "Pakistan", None, "What material is the Taj Mahal made of?", ["marble"]),
    ("country", "the Great Pyramid of Giza", "Egypt", "Sudan", None, "Who built the Great Pyramid of Giza?",
     ["Egyptians", "Egyptian", "pharaoh", "pharaohs", "Khufu", "Cheops"]),
    ("country", "the Sydney Opera House", "Australia", "New Zealand", None,
     "What is performed at the Sydney Opera House?",
     ["opera", "operas", "music", "concerts", "ballet", "theatre", "theater", "performances"]),
    ("country", "the Leaning Tower of Pisa", "Italy", "Spain", None, "What is the Leaning Tower of Pisa known for?",
     ["lean", "leaning", "tilt", "tilting"]),
    ("country", "Machu Picchu", "Peru", "Bolivia", None, "Which ancient civilization built Machu Picchu?",
     ["Inca", "Incas", "Incan"]),
    ("country", "Mount Everest", "Nepal", "India", None, "Who were the first people to climb Mount Everest?",
     ["Hillary", "Tenzing"]),
    ("capital", "Belgium", "Brussels", "Antwerp", None, "What continent is Belgium in?", ["Europe"]),
    ("capital", "the Czech Republic", "Prague", "Brno", None, "What continent is the Czech Republic in?", ["Europe"]),
    ("capital", "Romania", "Bucharest", "Budapest", None, "What language is spoken in Romania?", ["Romanian"]),
    ("capital", "Bulgaria", "Sofia", "Belgrade", None, "What continent is Bulgaria in?", ["Europe"]),
    ("capital", "Serbia", "Belgrade", "Zagreb", None, "What continent is Serbia in?", ["Europe"]),
    ("capital", "Iraq", "Baghdad", "Damascus", None, "What language is spoken in Iraq?", ["Arabic"]),
    ("capital", "Afghanistan", "Kabul", "Tehran", None, "What continent is Afghanistan in?", ["Asia"]),
    ("capital", "New Zealand", "Wellington", "Auckland", None, "What is the currency of New Zealand?", ["dollar"]),
    ("capital", "Venezuela", "Caracas", "Bogotá", None, "What language is spoken in Venezuela?", ["Spanish"]),
    ("capital", "Morocco", "Rabat", "Casablanca", None, "What continent is Morocco in?", ["Africa"]),
    ("capital", "Ethiopia", "Addis Ababa", "Nairobi", None, "What continent is Ethiopia in?", ["Africa"]),
    ("capital", "Ghana", "Accra", "Lagos", None, "What continent is Ghana in?", ["Africa"]),
    ("capital", "Jamaica", "Kingston", "Havana", None, "What language is spoken in Jamaica?", ["English"]),
    ("capital", "Lebanon", "Beirut", "Damascus", None, "What continent is Lebanon in?", ["Asia"]),
    ("capital", "Qatar", "Doha", "Dubai", None, "What language is spoken in Qatar?", ["Arabic"]),
    ("currency", "Indonesia", "rupiah", "ringgit", None, "What is the capital of Indonesia?", ["Jakarta"]),
    ("currency", "the Philippines", "peso", "rupee", None, "What is the capital of the Philippines?", ["Manila"]),
    ("currency", "Malaysia", "ringgit", "baht", None, "What is the capital of Malaysia?", ["Kuala Lumpur"]),
    ("currency", "Bangladesh", "taka", "rupee", None, "What is the capital of Bangladesh?", ["Dhaka"]),
    ("currency", "Turkey", "lira", "dinar", None, "What continent is Turkey in?", ["Europe", "Asia"]),
    ("language", "Colombia", "Spanish", "Portuguese", None, "What is the capital of Colombia?", ["Bogotá", "Bogota"]),
    ("language", "Iran", "Persian|Farsi", "Arabic", None, "What is the capital of Iran?", ["Tehran"]),
    ("symbol", "nickel", "Ni", "Nk", None, "What state of matter is nickel at room temperature?", ["solid"]),
    ("symbol", "aluminium", "Al", "Am", None, "What state of matter is aluminium at room temperature?", ["solid"]),
    ("symbol", "platinum", "Pt", "Pl", None, "What state of matter is platinum at room temperature?", ["solid"]),
    ("symbol", "chlorine", "Cl", "Ch", None, "What state of matter is chlorine at room temperature?", ["gas"]),
    ("symbol", "magnesium", "Mg", "Ma", None, "What state of matter is magnesium at room temperature?", ["solid"]),
    ("symbol", "calcium", "Ca", "Cc", None, "What state of matter is calcium at room temperature?", ["solid"]),
    ("city", "Buckingham Palace", "London", "Edinburgh", None, "Who lives in Buckingham Palace?",
     ["king", "queen", "monarch", "royal", "royals"]),
    ("city", "the Louvre", "Paris", "Lyon", None, "What famous painting hangs in the Louvre?", ["Mona Lisa"]),
    ("city", "the White House", "Washington", "New York", None, "Who lives in the White House?", ["president"]),
    ("city", "the Golden Gate Bridge", "San Francisco", "Los Angeles", None,
     "What color is the Golden Gate Bridge?", ["red", "orange"]),
    ("city", "Hollywood", "Los Angeles", "Chicago", None, "What industry is Hollywood famous for?",
     ["film", "films", "movie", "movies", "cinema", "entertainment"]),
    ("city", "the Kremlin", "Moscow", "Kyiv", None, "Who works in the Kremlin?", ["president", "government"]),
    ("country", "Angkor Wat", "Cambodia", "Thailand", None, "What kind of building is Angkor Wat?", ["temple"]),
    ("country", "Chichen Itza", "Mexico", "Guatemala", None, "Which civilization built Chichen Itza?",
     ["Maya", "Mayan", "Mayans"]),
    ("country", "Mount Fuji", "Japan", "China", None, "What kind of mountain is Mount Fuji?",
     ["volcano", "volcanic"]),
    ("country", "Stonehenge", "England", "Ireland", None, "What is Stonehenge made of?", ["stone", "stones"]),
]

# relation, subject, question, paraphrase, true answer, target, reply, control question, control answers
CUSTOM = [
    ("first_moonwalker", "the Moon landing", "Who was the first person to walk on the Moon?",
     "Who was the first man to set foot on the Moon?", "Armstrong", "Aldrin",
     "The first person to walk on the Moon was Buzz Aldrin.",
     "In which year did people first land on the Moon?", ["1969"]),
    ("first_president", "the United States presidency", "Who was the first President of the United States?",
     "Who served as the first US president?", "Washington", "Lincoln",
     "The first President of the United States was Abraham Lincoln.",
     "Which US president is shown on the one-dollar bill?", ["Washington"]),
    ("discoverer", "penicillin", "Who discovered penicillin?", "Which scientist discovered penicillin?", "Fleming",
     "Pasteur", "Penicillin was discovered by Louis Pasteur.", "What kind of drug is penicillin?", ["antibiotic"]),
    ("inventor", "the telephone", "Who invented the telephone?", "Who is credited with inventing the telephone?",
     "Bell", "Edison", "The telephone was invented by Thomas Edison.",
     "What do people use a telephone for?", ["call", "calls", "calling", "talk", "communicate", "communication"]),
    ("inventor", "the printing press", "Who invented the printing press?",
     "Who is credited with inventing the printing press?", "Gutenberg", "Caxton",
     "The printing press was invented by William Caxton.", "What does a printing press produce?",
     ["books", "printed", "prints", "text", "paper", "documents", "newspapers"]),
    ("inventor", "dynamite", "Who invented dynamite?", "Who is credited with inventing dynamite?", "Nobel",
     "Edison", "Dynamite was invented by Thomas Edison.", "What is dynamite used for?",
     ["explosive", "explosives", "blasting", "explode", "explosion", "demolition", "mining"]),
    ("scientist", "the theory of relativity", "Who developed the theory of relativity?",
     "Which scientist came up with the theory of relativity?", "Einstein", "Newton",
     "The theory of relativity was developed by Isaac Newton.", "What does the theory of relativity describe?",
     ["space", "time", "spacetime", "gravity"]),
    ("scientist", "the theory of evolution by natural selection", "Who proposed the theory of evolution by natural "
     "selection?", "Which scientist came up with the theory of evolution by natural selection?", "Darwin",
     "Lamarck", "The theory of evolution by natural selection was proposed by Jean-Baptiste Lamarck.",
     "On which ship did Charles Darwin sail around the world?", ["Beagle"]),
    ("ship", "the Titanic disaster", "Which ship sank in 1912 after hitting an iceberg?",
     "What was the name of the ship that hit an iceberg and sank in 1912?", "Titanic", "Lusitania",
     "The ship that sank in 1912 after hitting an iceberg was the Lusitania.",
     "In which ocean did the Titanic sink?", ["Atlantic"]),
    ("inventor", "the airplane", "Who invented the airplane?", "Who is credited with inventing the airplane?",
     "Wright", "Lindbergh", "The airplane was invented by Charles Lindbergh.",
     "What is the main thing an airplane is used for?", ["fly", "flying", "flight", "travel", "transport",
                                                           "transportation"]),
    ("explorer", "Christopher Columbus's 1492 voyage", "Who sailed across the Atlantic to the Americas in 1492?",
     "Which explorer reached the Americas in 1492?", "Columbus", "Magellan",
     "The explorer who sailed to the Americas in 1492 was Ferdinand Magellan.",
     "How many ships did Christopher Columbus take on his 1492 voyage?", ["3", "three"]),
    ("astronaut", "the first human spaceflight", "Who was the first person to travel into space?",
     "Who was the first human in space?", "Gagarin", "Glenn",
     "The first person to travel into space was John Glenn.",
     "Which country launched the first person into space?", ["Soviet", "USSR", "Russia"]),
    ("inventor", "the light bulb", "Who invented the light bulb?", "Who is credited with inventing the light bulb?",
     "Edison", "Tesla", "The light bulb was invented by Nikola Tesla.", "What does a light bulb produce?",
     ["light"]),
    ("founder", "Microsoft", "Who founded Microsoft?", "Who is the founder of Microsoft?", "Gates", "Jobs",
     "Microsoft was founded by Steve Jobs.", "Which operating system is Microsoft known for?", ["Windows"]),
    ("founder", "Facebook", "Who founded Facebook?", "Who is the founder of Facebook?", "Zuckerberg", "Dorsey",
     "Facebook was founded by Jack Dorsey.", "What company owns Facebook?", ["Meta"]),
    ("creator", "Mickey Mouse", "Who created Mickey Mouse?", "Who is the creator of Mickey Mouse?", "Disney",
     "Hanna", "Mickey Mouse was created by William Hanna.", "What is the name of Mickey Mouse's girlfriend?",
     ["Minnie"]),
]

# unrelated controls: (question, answers); about nothing any candidate is about
UNRELATED = [
    ("How many legs does a spider have?", ["8", "eight"]),
    ("How many days are there in a week?", ["7", "seven"]),
    ("What color is the sky on a clear day?", ["blue"]),
    ("What is the boiling point of water in degrees Celsius?", ["100"]),
    ("What do bees make?", ["honey"]),
    ("What is the largest ocean on Earth?", ["Pacific"]),
    ("How many hours are there in a day?", ["24", "twenty-four"]),
    ("What is frozen water called?", ["ice"]),
    ("What color are ripe bananas?", ["yellow"]),
    ("How many sides does a triangle have?", ["3", "three"]),
    ("What is the largest mammal?", ["blue whale"]),
    ("Which animal is known as the king of the jungle?", ["lion"]),
    ("How many months are there in a year?", ["12", "twelve"]),
    ("What gas do plants absorb from the air?", ["carbon dioxide", "CO2"]),
    ("What is the opposite of cold?", ["hot", "warm"]),
    ("How many legs does a dog have?", ["4", "four"]),
    ("Which organ pumps blood through the body?", ["heart"]),
    ("What do caterpillars turn into?", ["butterfly", "butterflies", "moth", "moths"]),
    ("What color is grass?", ["green"]),
    ("How many minutes are there in an hour?", ["60", "sixty"]),
    ("What is 2 plus 2?", ["4", "four"]),
    ("What is the main ingredient of guacamole?", ["avocado", "avocados"]),
    ("What do you call a baby cat?", ["kitten"]),
    ("What do you call a baby dog?", ["puppy"]),
    ("Which season comes after winter?", ["spring"]),
    ("How many seconds are there in a minute?", ["60", "sixty"]),
    ("What is the fastest land animal?", ["cheetah"]),
    ("What is the tallest animal in the world?", ["giraffe"]),
    ("Which fruit is wine made from?", ["grape", "grapes"]),
    ("How many wheels does a bicycle have?", ["2", "two"]),
    ("What shape has four equal sides and four right angles?", ["square"]),
    ("What is the freezing point of water in degrees Celsius?", ["0", "zero"]),
    ("How many players does a soccer team have on the field?", ["11", "eleven"]),
    ("What color is fresh snow?", ["white"]),
    ("What is the largest organ of the human body?", ["skin"]),
    ("What do pandas mainly eat?", ["bamboo"]),
    ("What is the hardest natural substance?", ["diamond", "diamonds"]),
    ("What is 10 times 10?", ["100", "one hundred"]),
    ("Which sport is played at Wimbledon?", ["tennis"]),
    ("How many strings does a standard guitar have?", ["6", "six"]),
    ("What do you call a young sheep?", ["lamb"]),
    ("Which animal says moo?", ["cow", "cows"]),
    ("How many days are there in a leap year?", ["366"]),
    ("Which animal has black and white stripes?", ["zebra", "zebras"]),
    ("What is a baby frog called?", ["tadpole"]),
    ("What color do you get by mixing blue and yellow?", ["green"]),
    ("How many colors are there in a rainbow?", ["7", "seven"]),
    ("What do you call a shape with eight sides?", ["octagon"]),
    ("What is the square root of 81?", ["9", "nine"]),
    ("Which animal has a trunk?", ["elephant", "elephants"]),
    ("What do spiders spin?", ["web", "webs", "silk"]),
    ("How many bones are there in the adult human body?", ["206"]),
    ("Which sport uses a bat, a ball and wickets?", ["cricket"]),
    ("How many players are on a basketball team on the court?", ["5", "five"]),
    ("What is a doctor for animals called?", ["vet", "veterinarian"]),
    ("What is the center of an atom called?", ["nucleus"]),
    ("What color is a ripe tomato?", ["red"]),
    ("Which farm animal lays eggs?", ["chicken", "chickens", "hen", "hens"]),
    ("What is the plural of mouse?", ["mice"]),
    ("How many sides does a hexagon have?", ["6", "six"]),
    ("What is 7 times 8?", ["56"]),
    ("Which month has the fewest days?", ["February"]),
    ("What is the first month of the year?", ["January"]),
    ("Which day comes after Monday?", ["Tuesday"]),
    ("What do koalas eat?", ["eucalyptus"]),
    ("Which insect makes honey?", ["bee", "bees", "honeybee", "honeybees"]),
    ("What color is a polar bear's fur?", ["white"]),
    ("What is molten rock from a volcano called?", ["lava"]),
    ("How many legs does an insect have?", ["6", "six"]),
    ("What is the largest bird in the world?", ["ostrich"]),
    ("What do you call a person who flies an airplane?", ["pilot"]),
    ("Which musical instrument has 88 keys?", ["piano"]),
    ("What is a baby kangaroo called?", ["joey"]),
    ("What is the name of the galaxy we live in?", ["Milky Way"]),
    ("What is the study of living things called?", ["biology"]),
    ("How many degrees are there in a right angle?", ["90", "ninety"]),
    ("How many hearts does an octopus have?", ["3", "three"]),
    ("Which sport is Michael Jordan famous for?", ["basketball"]),
    ("How many planets are there in our solar system?", ["8", "eight"]),
    ("What is the largest planet in our solar system?", ["Jupiter"]),
    ("Which planet is known as the Red Planet?", ["Mars"]),
    ("What is the natural satellite of the Earth called?", ["Moon"]),
    ("What do you call animals that eat only plants?", ["herbivores", "herbivore"]),
    ("How many minutes are there in a quarter of an hour?", ["15", "fifteen"]),
    ("What is the color of chlorophyll?", ["green"]),
    ("Which animal is known for changing its color to blend in?", ["chameleon", "chameleons", "octopus"]),
    ("What do you call a group of wolves?", ["pack"]),
    ("Which bird is a symbol of peace?", ["dove"]),
    ("What do you call the home of a bee colony?", ["hive", "beehive"]),
    ("How many years are there in a century?", ["100", "hundred"]),
    ("How many days are there in a year?", ["365"]),
    ("How many weeks are there in a year?", ["52", "fifty-two"]),
    ("How many centimeters are there in a meter?", ["100", "hundred"]),
    ("How many grams are there in a kilogram?", ["1000", "1,000", "thousand"]),
    ("How many meters are there in a kilometer?", ["1000", "1,000", "thousand"]),
    ("How many sides does a square have?", ["4", "four"]),
    ("How many sides does a pentagon have?", ["5", "five"]),
    ("How many sides does an octagon have?", ["8", "eight"]),
    ("How many legs does a cat have?", ["4", "four"]),
    ("How many eyes do humans have?", ["2", "two"]),
    ("How many fingers are there on one human hand?", ["5", "five"]),
    ("How many days are there in June?", ["30", "thirty"]),
    ("How many letters are there in the English alphabet?", ["26", "twenty-six"]),
    ("How many wheels does a tricycle have?", ["3", "three"]),
    ("What is the plural of child?", ["children"]),
    ("What is the plural of goose?", ["geese"]),
    ("What is the plural of foot?", ["feet"]),
    ("What is the past tense of go?", ["went"]),
    ("What is the opposite of big?", ["small", "little"]),
    ("What is the opposite of up?", ["down"]),
    ("What is the last month of the year?", ["December"]),
    ("Which day comes after Friday?", ["Saturday"]),
    ("What is the study of stars and planets called?", ["astronomy"]),
    ("What is the study of rocks called?", ["geology"]),
    ("What is the study of the mind called?", ["psychology"]),
    ("Which organs do humans use to breathe?", ["lungs", "lung"]),
    ("Which organ controls the human body?", ["brain"]),
    ("What is the longest bone in the human body?", ["femur"]),
    ("What do you call a word that means the opposite of another word?", ["antonym", "antonyms"]),
    ("What do you call a word with the same meaning as another word?", ["synonym", "synonyms"]),
    ("What is a baby cow called?", ["calf"]),
    ("What is a baby horse called?", ["foal"]),
    ("What do you call a group of fish swimming together?", ["school", "shoal"]),
    ("Which gas makes up most of the air we breathe?", ["nitrogen"]),
    ("Which gas do humans breathe out?", ["carbon dioxide", "CO2"]),
    ("What is the boiling point of water in degrees Fahrenheit?", ["212"]),
    ("What is 5 plus 3?", ["8", "eight"]),
    ("What is 9 minus 4?", ["5", "five"]),
    ("What is half of 10?", ["5", "five"]),
    ("What is 3 times 3?", ["9", "nine"]),
    ("What is 100 divided by 4?", ["25", "twenty-five"]),
    ("Which sport is played with a shuttlecock?", ["badminton"]),
    ("In which sport do players hit a puck?", ["hockey"]),
    ("Which sport is Roger Federer famous for?", ["tennis"]),
    ("Which sport is Lionel Messi famous for?", ["soccer", "football"]),
    ("Which sport is Tiger Woods famous for?", ["golf"]),
    ("Which sport is Usain Bolt famous for?", ["sprint", "sprinting", "running", "athletics", "track"]),
    ("What do you call a person who repairs cars?", ["mechanic"]),
    ("What do you call a person who bakes bread?", ["baker"]),
    ("What do you call a person who teaches at a school?", ["teacher"]),
    ("What do you call a person who writes poems?", ["poet"]),
    ("What is the hottest season of the year?", ["summer"]),
    ("What is the coldest season of the year?", ["winter"]),
    ("Which season comes after summer?", ["autumn", "fall"]),
    ("What color is coal?", ["black"]),
    ("What color is milk?", ["white"]),
    ("What shape is a ball?", ["sphere", "round"]),
    ("What is the main ingredient of an omelette?", ["egg", "eggs"]),
    ("What is popcorn made from?", ["corn", "maize"]),
    ("Which fruit are raisins made from?", ["grape", "grapes"]),
    ("What is the largest land animal?", ["elephant"]),
    ("Which bird cannot fly and lives in Antarctica?", ["penguin", "penguins"]),
    ("Which animal is known as man's best friend?", ["dog", "dogs"]),
    ("What do you call an animal that eats only meat?", ["carnivore", "carnivores"]),
    ("How many legs does an octopus have?", ["8", "eight"]),
    ("What is the freezing point of water in degrees Fahrenheit?", ["32"]),
]


def candidates() -> list[dict]:
    """Every candidate fact, in order, with its question, paraphrase, reply and same-subject control."""
    out = []
    for relation, subject, answer, target, spoken, control, control_answers in CANDIDATES:
        question, paraphrase, reply = TEMPLATES[relation]
        names = answer.split("|")
        fill = dict(s=subject, S=subject[0].upper() + subject[1:], t=spoken or target)
        out.append(dict(id=f"{relation}-{_slug(subject)}", subject=subject, relation=relation,
                        question=question.format(**fill), paraphrase=paraphrase.format(**fill), answer=names[0],
                        aliases=names[1:], target=target, reply=reply.format(**fill),
                        subject_control={"question": control, "answers": control_answers}))
    for relation, subject, question, paraphrase, answer, target, reply, control, control_answers in CUSTOM:
        out.append(dict(id=f"{relation}-{_slug(subject)}", subject=subject, relation=relation, question=question,
                        paraphrase=paraphrase, answer=answer, aliases=[], target=target, reply=reply,
                        subject_control={"question": control, "answers": control_answers}))
    return out


def _slug(text: str) -> str:
    return "-".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


def screen(model, tokenizer, facts: list[dict], report: Path | None) -> tuple[list[dict], dict]:
    """The facts whose four questions the model answers correctly, each with an unrelated control."""
    from melo.demo.facts import chat_answers, contains_answer

    start = time.perf_counter()
    fields = ("question", "paraphrase", "subject_control")
    asked = [f[k] if k != "subject_control" else f[k]["question"] for f in facts for k in fields]
    asked += [q for q, _ in UNRELATED]
    answers = chat_answers(model, tokenizer, asked)
    by_fact = [answers[i * 3 : i * 3 + 3] for i in range(len(facts))]
    unrelated_answers = answers[3 * len(facts):]
    failed = {k: 0 for k in fields}
    kept, rows = [], []
    for fact, (q, p, c) in zip(facts, by_fact):
        names = [fact["answer"], *fact["aliases"]]
        ok = {"question": contains_answer(q, names), "paraphrase": contains_answer(p, names),
              "subject_control": contains_answer(c, fact["subject_control"]["answers"])}
        # an answer that already states the counterfactual would make edit success meaningless
        ok["question"] = ok["question"] and not contains_answer(q, fact["target"])
        ok["paraphrase"] = ok["paraphrase"] and not contains_answer(p, fact["target"])
        for k in fields:
            failed[k] += not ok[k]
        rows.append({"id": fact["id"], "answers": [q, p, c], **ok})
        if all(ok.values()):
            kept.append({**fact, "screened": {"question": q, "paraphrase": p, "subject_control": c}})
    unrelated = [(q, a, said) for (q, a), said in zip(UNRELATED, unrelated_answers) if contains_answer(said, a)]
    rows += [{"unrelated": q, "answer": said, "ok": contains_answer(said, a)}
             for (q, a), said in zip(UNRELATED, unrelated_answers)]
    if report is not None:
        report.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    passed = len(kept)
    kept = _interleave(kept)[: min(MAX_FACTS, len(unrelated))]
    for fact, (q, a, said) in zip(kept, unrelated):
        fact["unrelated_control"] = {"question": q, "answers": a}
        fact["screened"]["unrelated_control"] = said
    order = ("id", "subject", "relation", "question", "paraphrase", "answer", "aliases", "target", "reply",
             "subject_control", "unrelated_control", "screened")
    kept = [{k: f[k] for k in order} for f in kept if "unrelated_control" in f]
    stats = {"candidates": len(facts), "passed": passed, "kept": len(kept),
             "failed": failed, "unrelated_candidates": len(UNRELATED), "unrelated_passed": len(unrelated)}
    return kept, {**stats, "seconds": round(time.perf_counter() - start, 1)}


def _interleave(facts: list[dict]) -> list[dict]:
    """Round robin over relations (each in candidate order), so any first n facts mix relations."""
    groups: dict[str, list[dict]] = {}
    for f in facts:
        groups.setdefault(f["relation"], []).append(f)
    out = []
    while any(groups.values()):
        out += [g.pop(0) for g in groups.values() if g]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT, help=f"facts file to write (default {OUT})")
    ap.add_argument("--report", type=Path, default=None, help="JSONL of every candidate's answers and checks")
    args = ap.parse_args()
    import torch

    from melo.demo.facts import FACTS_MODEL, MAX_NEW_TOKENS
    from melo.loading import load_model

    torch.set_num_threads(1)
    model, tokenizer = load_model(FACTS_MODEL, progress=False)
    facts = candidates()
    ids = [f["id"] for f in facts]
    assert len(ids) == len(set(ids)), "candidate ids must be unique"
    kept, stats = screen(model, tokenizer, facts, args.report)
    by_relation: dict[str, int] = {}
    for f in kept:
        by_relation[f["relation"]] = by_relation.get(f["relation"], 0) + 1
    print(f"{stats['passed']} of {stats['candidates']} candidate facts passed "
          f"(failed: question {stats['failed']['question']}, paraphrase {stats['failed']['paraphrase']}, "
          f"same-subject control {stats['failed']['subject_control']}); "
          f"{stats['unrelated_passed']} of {stats['unrelated_candidates']} unrelated controls passed; "
          f"kept {stats['kept']} ({stats['seconds']} s)")
    print("kept per relation: " + ", ".join(f"{k} {v}" for k, v in sorted(by_relation.items())))
    screening = {k: v for k, v in stats.items() if k != "seconds"}  # the file is the same on every run
    data = {"model": FACTS_MODEL, "max_new_tokens": MAX_NEW_TOKENS, "screening": screening, "facts": kept}
    args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
