#!/usr/bin/env python3
"""Deterministic synthetic customers and orders for the pg_mseg demo and benchmarks.

    python3 scripts/gen_customers.py [--customers N] [--seed S] [--out DIR]

writes DIR/customers.csv and DIR/orders.csv (UTF-8, CSV with a header line), ready for

    \\copy customers FROM 'DIR/customers.csv' WITH (FORMAT csv, HEADER)
    \\copy orders    FROM 'DIR/orders.csv'    WITH (FORMAT csv, HEADER)

The same arguments always give byte-identical files: a single random.Random(seed) stream is
consumed in a fixed order, and nothing depends on the clock, the locale or hash order.
Standard library only.

The data is fictitious but shaped like a German sporting-goods retailer's customer base:
- customer_id grows with signup_date (2015 .. 2026, more signups in later years);
- birth_date 1940 .. 2007, most customers 25-45, nobody younger than 16 at signup;
- postcode/city clustered around real German cities (Berlin dominates, so prefixes such as
  '10', '12', '13' are common), a long tail of smaller towns;
- email firstname.lastname+<customer_id>@<provider> and phone '+49 ...' are unique per customer;
- health_interest (GDPR Art. 9 sensitive) is set for about 10 % of customers;
- orders 2023-01-01 .. 2026-10-31, never before the customer's signup, geometric count with
  mean 5 (about 1 in 6 customers has none), categories follow each customer's favourites,
  December and spring are busier, evenings busier than nights.
"""

import argparse
import bisect
import csv
import datetime
import math
import os
import random
import sys
import time
import unicodedata

# --------------------------------------------------------------------------------------------
# Fixed vocabularies (order matters: it is part of the determinism)
# --------------------------------------------------------------------------------------------

FIRST_F_OLD = ["Ursula", "Monika", "Petra", "Sabine", "Renate", "Helga", "Karin", "Brigitte",
               "Ingrid", "Gabriele", "Elke", "Birgit", "Andrea", "Susanne", "Christa", "Heike",
               "Claudia", "Angelika", "Barbara", "Martina", "Gisela", "Erika", "Marion", "Doris",
               "Jutta", "Silke", "Anke", "Beate", "Hannelore", "Dagmar"]
FIRST_F_YOUNG = ["Anna", "Laura", "Julia", "Lea", "Sarah", "Lena", "Hannah", "Katharina",
                 "Lisa", "Sophie", "Marie", "Johanna", "Jana", "Vanessa", "Christina", "Nina",
                 "Jennifer", "Stefanie", "Melanie", "Nicole", "Sandra", "Jessica", "Franziska",
                 "Mia", "Emma", "Leonie", "Clara", "Ayşe", "Zeynep", "Aleksandra", "Elena",
                 "Maria", "Amelie", "Charlotte", "Paula", "Luisa", "Merve", "Natalia", "Chiara"]
FIRST_M_OLD = ["Peter", "Michael", "Wolfgang", "Klaus", "Jürgen", "Thomas", "Dieter", "Manfred",
               "Hans", "Uwe", "Werner", "Günter", "Horst", "Bernd", "Rainer", "Frank", "Andreas",
               "Stefan", "Gerhard", "Helmut", "Joachim", "Ralf", "Heinz", "Karl-Heinz", "Detlef",
               "Norbert", "Hartmut", "Reinhard", "Volker", "Matthias"]
FIRST_M_YOUNG = ["Lukas", "Jonas", "Leon", "Finn", "Felix", "Maximilian", "Paul", "Tim", "Jan",
                 "Niklas", "Alexander", "Daniel", "Sebastian", "Tobias", "Florian", "Christian",
                 "Philipp", "Julian", "David", "Moritz", "Simon", "Fabian", "Kevin", "Dennis",
                 "Marcel", "Noah", "Elias", "Ben", "Luca", "Emre", "Mehmet", "Can", "Piotr",
                 "Ivan", "Marco", "Ahmad", "Dominik", "Benedikt", "Jakob"]
FIRST_D = ["Alex", "Kim", "Robin", "Sascha", "Charlie", "Luca", "Toni", "Kai", "Jule", "Sam",
           "Noa", "Mika", "Eike", "Quinn"]

LAST_NAMES = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
              "Schulz", "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf",
              "Schröder", "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger", "Hofmann",
              "Hartmann", "Lange", "Schmitt", "Werner", "Schmitz", "Krause", "Meier", "Lehmann",
              "Schmid", "Schulze", "Maier", "Köhler", "Herrmann", "König", "Walter", "Mayer",
              "Huber", "Kaiser", "Fuchs", "Peters", "Lang", "Scholz", "Möller", "Weiß", "Jung",
              "Hahn", "Schubert", "Vogel", "Friedrich", "Keller", "Günther", "Frank", "Berger",
              "Winkler", "Roth", "Beck", "Lorenz", "Baumann", "Franke", "Albrecht", "Schuster",
              "Simon", "Ludwig", "Böhm", "Winter", "Kraus", "Martin", "Schumacher", "Krämer",
              "Vogt", "Stein", "Jäger", "Otto", "Sommer", "Groß", "Seidel", "Heinrich", "Brandt",
              "Haas", "Schreiber", "Graf", "Schulte", "Dietrich", "Ziegler", "Kuhn", "Kühn",
              "Pohl", "Engel", "Horn", "Busch", "Bergmann", "Thomas", "Voigt", "Sauer", "Arnold",
              "Wolff", "Pfeiffer", "Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Öztürk",
              "Nowak", "Kowalski", "Wiśniewski", "Popescu", "Rossi", "Russo", "Nguyen",
              "Ivanov", "Petrović", "Jovanović", "García", "Papadopoulos", "Hoxha", "Novák",
              "Horváth", "Kovačević", "Al-Hassan", "Haddad", "Silva", "Smirnov", "Dubois"]

EMAIL_DOMAINS = [("gmail.com", 24), ("web.de", 17), ("gmx.de", 16), ("t-online.de", 9),
                 ("outlook.com", 7), ("yahoo.de", 5), ("icloud.com", 6), ("gmx.net", 4),
                 ("hotmail.de", 3), ("posteo.de", 2), ("freenet.de", 2), ("mail.de", 1),
                 ("mailbox.org", 1), ("aol.com", 1), ("proton.me", 2)]

# (city, weight, area code, postcode ranges, number of distinct postcodes actually used)
BIG_CITIES = [
    ("Berlin", 190, "30", [(10115, 10999), (12043, 12689), (13051, 13629), (14050, 14199)], 190),
    ("Hamburg", 95, "40", [(20095, 22769)], 100),
    ("München", 80, "89", [(80331, 81929)], 75),
    ("Köln", 55, "221", [(50667, 51149)], 45),
    ("Frankfurt am Main", 40, "69", [(60306, 60599), (65929, 65936)], 40),
    ("Stuttgart", 33, "711", [(70173, 70629)], 35),
    ("Düsseldorf", 32, "211", [(40210, 40629)], 35),
    ("Leipzig", 31, "341", [(4103, 4357)], 30),
    ("Dortmund", 29, "231", [(44135, 44388)], 30),
    ("Essen", 29, "201", [(45127, 45359)], 30),
    ("Bremen", 28, "421", [(28195, 28779)], 30),
    ("Dresden", 28, "351", [(1067, 1328)], 30),
    ("Hannover", 27, "511", [(30159, 30669)], 30),
    ("Nürnberg", 26, "911", [(90402, 90491)], 28),
]
SMALL_CITIES = [
    ("Potsdam", "331", 14467), ("Freiburg im Breisgau", "761", 79098), ("Heidelberg", "6221", 69117),
    ("Münster", "251", 48143), ("Augsburg", "821", 86150), ("Bonn", "228", 53111),
    ("Mainz", "6131", 55116), ("Kiel", "431", 24103), ("Rostock", "381", 18055),
    ("Erfurt", "361", 99084), ("Regensburg", "941", 93047), ("Göttingen", "551", 37073),
    ("Würzburg", "931", 97070), ("Ulm", "731", 89073), ("Karlsruhe", "721", 76133),
    ("Mannheim", "621", 68159), ("Wiesbaden", "611", 65183), ("Aachen", "241", 52062),
    ("Bielefeld", "521", 33602), ("Bochum", "234", 44787), ("Wuppertal", "202", 42103),
    ("Magdeburg", "391", 39104), ("Saarbrücken", "681", 66111), ("Lübeck", "451", 23552),
    ("Oldenburg", "441", 26122), ("Osnabrück", "541", 49074), ("Jena", "3641", 7743),
    ("Halle (Saale)", "345", 6108), ("Chemnitz", "371", 9111), ("Kassel", "561", 34117),
    ("Trier", "651", 54290), ("Konstanz", "7531", 78462), ("Passau", "851", 94032),
    ("Bamberg", "951", 96047), ("Tübingen", "7071", 72070), ("Flensburg", "461", 24937),
    ("Schwerin", "385", 19053), ("Cottbus", "355", 3046), ("Ingolstadt", "841", 85049),
    ("Darmstadt", "6151", 64283), ("Paderborn", "5251", 33098), ("Koblenz", "261", 56068),
    ("Gelsenkirchen", "209", 45879), ("Braunschweig", "531", 38100), ("Krefeld", "2151", 47798),
    ("Mönchengladbach", "2161", 41061), ("Oberhausen", "208", 46045), ("Hagen", "2331", 58095),
    ("Hamm", "2381", 59065), ("Ludwigshafen am Rhein", "621", 67059), ("Leverkusen", "214", 51373),
    ("Solingen", "212", 42651), ("Heilbronn", "7131", 74072), ("Pforzheim", "7231", 75172),
    ("Offenbach am Main", "69", 63065), ("Fürth", "911", 90762), ("Wolfsburg", "5361", 38440),
    ("Gießen", "641", 35390), ("Marburg", "6421", 35037), ("Siegen", "271", 57072),
    ("Hildesheim", "5121", 31134), ("Lüneburg", "4131", 21335), ("Greifswald", "3834", 17489),
    ("Stralsund", "3831", 18439), ("Weimar", "3643", 99423), ("Landshut", "871", 84028),
    ("Rosenheim", "8031", 83022), ("Kempten (Allgäu)", "831", 87435), ("Garmisch-Partenkirchen", "8821", 82467),
    ("Berchtesgaden", "8652", 83471), ("Lindau (Bodensee)", "8382", 88131), ("Husum", "4841", 25813),
    ("Cuxhaven", "4721", 27472), ("Aurich", "4941", 26603), ("Celle", "5141", 29221),
    ("Goslar", "5321", 38640), ("Fulda", "661", 36037), ("Bayreuth", "921", 95444),
    ("Hof", "9281", 95028), ("Zwickau", "375", 8056), ("Görlitz", "3581", 2826),
    ("Neubrandenburg", "395", 17033), ("Frankfurt (Oder)", "335", 15230), ("Dessau-Roßlau", "340", 6844),
]
SMALL_CITY_WEIGHT = 3.4     # each small town; the big cities above keep about 60 % of customers
SMALL_CITY_CODES = 4        # distinct postcodes per small town

MOBILE_PREFIXES = ["151", "152", "157", "159", "160", "162", "163", "170", "171", "172", "173",
                   "174", "175", "176", "177", "178", "179", "155", "156"]

HEALTH_INTERESTS = [("vegan", 18), ("vegetarian", 16), ("diabetes", 10), ("lactose intolerance", 9),
                    ("back pain", 9), ("celiac disease", 5), ("hypertension", 7), ("asthma", 5),
                    ("heart health", 6), ("allergy", 7), ("pregnancy", 8)]
HEALTH_RATE = 0.10

# category, global weight, (median price, spread), probability that a basket has 2-3 items
CATEGORIES = [
    ("running", 17, (79.0, 0.55), 0.30),
    ("cycling", 11, (54.0, 1.10), 0.20),
    ("yoga", 8, (34.0, 0.60), 0.35),
    ("outdoor", 13, (69.0, 0.85), 0.30),
    ("kids", 9, (29.0, 0.60), 0.45),
    ("books", 6, (18.0, 0.35), 0.25),
    ("electronics", 7, (119.0, 0.90), 0.10),
    ("swimming", 5, (32.0, 0.55), 0.25),
    ("fitness", 9, (42.0, 0.85), 0.30),
    ("team_sports", 6, (39.0, 0.60), 0.35),
    ("winter_sports", 4, (139.0, 0.80), 0.25),
    ("nutrition", 5, (24.0, 0.45), 0.60),
]
PRICE_POOL = 2048           # precomputed basket amounts per category
DAY_POOL = 1 << 16          # precomputed seasonally weighted order days
TIME_POOL = 1 << 16         # precomputed times of day

EPOCH = datetime.date(1940, 1, 1)
BIRTH_FIRST, BIRTH_LAST = 1940, 2007
SIGNUP_FIRST = datetime.date(2015, 1, 1)
ORDERS_FIRST = datetime.date(2023, 1, 1)
DATA_END = datetime.date(2026, 10, 31)      # "today" of the data set, fixed for determinism
MEAN_ORDERS = 5.0

CUSTOMER_HEADER = ["customer_id", "email", "first_name", "last_name", "phone", "birth_date",
                   "postcode", "sex", "city", "health_interest", "has_children", "signup_date",
                   "loyalty_points"]
ORDER_HEADER = ["order_id", "customer_id", "ordered_at", "category", "amount"]

# --------------------------------------------------------------------------------------------


def slug(name):
    """ASCII, lower case, e-mail friendly form of a name: 'Müller' -> 'mueller'."""
    s = name.lower()
    for a, b in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss"), ("ı", "i"), ("ł", "l"),
                 ("đ", "d"), ("ø", "o"), ("æ", "ae")):
        s = s.replace(a, b)
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")
    return "".join(c for c in s if c.isalnum() or c == "-").strip("-")


def cumulative(weights):
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def date_strings(first, last):
    """ISO strings for every day in [first, last]."""
    n = (last - first).days + 1
    one = datetime.timedelta(days=1)
    out, d = [], first
    for _ in range(n):
        out.append(d.isoformat())
        d += one
    return out


def price_string(cents):
    return "%d.%02d" % divmod(cents, 100)


def build_price_pool(rng, median, sigma, multi):
    """Basket amounts with shop-like endings (.99, .95, .90, .00)."""
    pool = []
    mu = math.log(median)
    for _ in range(PRICE_POOL):
        items = 1
        if rng.random() < multi:
            items = 2 if rng.random() < 0.75 else 3
        cents = 0
        for _ in range(items):
            p = min(max(rng.lognormvariate(mu, sigma), 3.0), 4000.0)
            euros = int(p)
            ending = rng.random()
            if ending < 0.55:
                c = 99
            elif ending < 0.75:
                c = 95
            elif ending < 0.85:
                c = 90
            elif ending < 0.95:
                c = 0
            else:
                c = int(rng.random() * 100)
            cents += max(euros, 1) * 100 + c
        pool.append((price_string(cents), cents))
    return pool


def generate(n, seed, out_dir):
    rng = random.Random(seed)
    rnd = rng.random
    log = math.log

    # ---- names -------------------------------------------------------------------------
    def name_table(names, skew):
        cum = cumulative([1.0 / (i + 1) ** skew for i in range(len(names))])
        return names, [slug(x) for x in names], cum

    first_tables = {
        ("f", 0): name_table(FIRST_F_OLD, 0.7), ("f", 1): name_table(FIRST_F_YOUNG, 0.6),
        ("m", 0): name_table(FIRST_M_OLD, 0.7), ("m", 1): name_table(FIRST_M_YOUNG, 0.6),
        ("d", 0): name_table(FIRST_D, 0.5), ("d", 1): name_table(FIRST_D, 0.5),
    }
    last_names, last_slugs, last_cum = name_table(LAST_NAMES, 0.75)
    last_total = last_cum[-1]

    email_domains = [d for d, _ in EMAIL_DOMAINS]
    email_cum = cumulative([w for _, w in EMAIL_DOMAINS])
    email_total = email_cum[-1]

    # ---- places: (city, postcode, area code) with Zipf weights inside each city ---------
    places, place_w = [], []
    for city, weight, area, ranges, count in BIG_CITIES:
        candidates = []
        for lo, hi in ranges:
            candidates.extend(range(lo, hi + 1))
        codes = sorted(rng.sample(candidates, min(count, len(candidates))))
        order = list(range(len(codes)))
        rng.shuffle(order)                         # popularity independent of numeric order
        zipf = [1.0 / (r + 1) ** 0.6 for r in range(len(codes))]
        ztotal = sum(zipf)
        for rank, idx in enumerate(order):
            places.append((city, "%05d" % codes[idx], area))
            place_w.append(weight * zipf[rank] / ztotal)
    for city, area, base in SMALL_CITIES:
        for i in range(SMALL_CITY_CODES):
            places.append((city, "%05d" % (base + 2 * i), area))
            place_w.append(SMALL_CITY_WEIGHT / (i + 1) / 2.083)
    place_cum = cumulative(place_w)
    place_total = place_cum[-1]

    # ---- dates -------------------------------------------------------------------------
    birth_days = date_strings(datetime.date(BIRTH_FIRST, 1, 1), datetime.date(BIRTH_LAST, 12, 31))
    # first day index of each birth year, for "born on a random day of year Y"
    year_start = [(datetime.date(y, 1, 1) - EPOCH).days for y in range(BIRTH_FIRST, BIRTH_LAST + 2)]
    # customers are mostly 25-45: a bump around 1987 over a thin floor, fewer very old
    birth_years = list(range(BIRTH_FIRST, BIRTH_LAST + 1))
    birth_cum = cumulative([0.25 + 3.0 * math.exp(-((y - 1987) / 11.0) ** 2)
                            + 0.8 * math.exp(-((y - 1965) / 9.0) ** 2) for y in birth_years])

    signup_days = date_strings(SIGNUP_FIRST, DATA_END)
    signup_year = [int(s[:4]) for s in signup_days]
    # growth: each year about 18 % more signups than the one before, a bump every January
    signup_cum = cumulative([1.18 ** (int(s[:4]) - 2015) * (1.5 if s[5:7] == "01" else 1.0)
                             for s in signup_days])
    signup_total = signup_cum[-1]

    order_days = date_strings(ORDERS_FIRST, DATA_END)
    n_order_days = len(order_days)
    orders_offset = (ORDERS_FIRST - SIGNUP_FIRST).days     # signup index -> order index
    month_weight = {"01": 1.0, "02": 0.85, "03": 1.15, "04": 1.25, "05": 1.2, "06": 1.05,
                    "07": 0.95, "08": 0.9, "09": 1.0, "10": 1.0, "11": 1.35, "12": 1.7}
    day_cum = cumulative([month_weight[s[5:7]] for s in order_days])
    # a sorted pool of seasonally weighted order days: a customer who can only order from day f
    # on draws from the pool's tail at or after f (one bisect per customer, not per order)
    day_pool = sorted(bisect.bisect_left(day_cum, rnd() * day_cum[-1]) for _ in range(DAY_POOL))
    # a pool of times of day, evenings busier than nights
    hour_cum = cumulative([0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.4, 0.8, 1.0, 1.1, 1.2, 1.3,
                           1.5, 1.3, 1.2, 1.2, 1.3, 1.6, 2.0, 2.4, 2.6, 2.3, 1.6, 0.8])
    time_pool = [" %02d:%02d:%02d" % (bisect.bisect_left(hour_cum, rnd() * hour_cum[-1]),
                                      int(rnd() * 60), int(rnd() * 60)) for _ in range(TIME_POOL)]

    # ---- orders ------------------------------------------------------------------------
    cat_names = [c[0] for c in CATEGORIES]
    cat_cum = cumulative([c[1] for c in CATEGORIES])
    cat_total = cat_cum[-1]
    kids_idx = cat_names.index("kids")
    price_pools = [build_price_pool(rng, m, s, multi) for _, _, (m, s), multi in CATEGORIES]
    # the end of an orders.csv line per category and basket: ",running,79.99\n", and its cents
    order_tails = [[("," + name + "," + amount + "\n", cents) for amount, cents in pool]
                   for name, pool in zip(cat_names, price_pools)]
    p_keep = 1.0 - 1.0 / (MEAN_ORDERS + 1.0)          # geometric on {0,1,..} with mean 5
    log_keep = log(p_keep)

    health = [h for h, _ in HEALTH_INTERESTS]
    health_cum = cumulative([w for _, w in HEALTH_INTERESTS])
    health_total = health_cum[-1]
    pregnancy = "pregnancy"

    # unique phone suffix: an affine bijection of customer_id modulo 9e7, plus 1e7 => 8 digits
    phone_mod = 90_000_000
    phone_mul = 55623857                              # coprime to 2, 3, 5
    phone_add = int(rnd() * phone_mod)
    mobile_n = len(MOBILE_PREFIXES)

    # signup days, sorted so that customer_id grows with signup_date
    signup_idx = [bisect.bisect_left(signup_cum, rnd() * signup_total) for _ in range(n)]
    signup_idx.sort()

    bl = bisect.bisect_left
    n_orders = 0
    order_id = 0
    health_count = 0
    t_path = os.path.join(out_dir, "customers.csv")
    o_path = os.path.join(out_dir, "orders.csv")
    with open(t_path, "w", encoding="utf-8", newline="") as cf, \
         open(o_path, "w", encoding="utf-8", newline="") as of:
        cw = csv.writer(cf, lineterminator="\n")
        cw.writerow(CUSTOMER_HEADER)
        of.write(",".join(ORDER_HEADER) + "\n")   # no field needs CSV quoting
        crow_buf, orow_buf = [], []
        for cid in range(1, n + 1):
            sidx = signup_idx[cid - 1]
            syear = signup_year[sidx]

            # sex, birth date (at least 16 at signup), names
            u = rnd()
            sex = "f" if u < 0.515 else ("m" if u < 0.99 else "d")
            max_year = min(BIRTH_LAST, syear - 16)
            yi = bl(birth_cum, rnd() * birth_cum[max_year - BIRTH_FIRST])
            byear = BIRTH_FIRST + yi
            d0 = year_start[yi]
            bday = birth_days[d0 + int(rnd() * (year_start[yi + 1] - d0))]
            names, slugs, fcum = first_tables[(sex, 1 if byear >= 1978 else 0)]
            fi = bl(fcum, rnd() * fcum[-1])
            li = bl(last_cum, rnd() * last_total)
            first = names[fi]
            last = last_names[li]
            email = "%s.%s+%d@%s" % (slugs[fi], last_slugs[li], cid,
                                     email_domains[bl(email_cum, rnd() * email_total)])

            city, postcode, area = places[bl(place_cum, rnd() * place_total)]
            suffix = 10_000_000 + (cid * phone_mul + phone_add) % phone_mod
            if rnd() < 0.78:
                phone = "+49 %s %d" % (MOBILE_PREFIXES[int(rnd() * mobile_n)], suffix)
            else:
                phone = "+49 %s %d" % (area, suffix)

            age = 2026 - byear
            p_children = 0.08 if age < 25 else (0.35 if age < 32 else (0.62 if age < 55 else 0.55))
            has_children = rnd() < p_children

            interest = ""
            if rnd() < HEALTH_RATE:
                interest = health[bl(health_cum, rnd() * health_total)]
                if interest == pregnancy and (sex == "m" or age > 45 or age < 18):
                    interest = "vegan"
                health_count += 1

            # one or two favourite categories; parents buy kids' things
            fav1 = bl(cat_cum, rnd() * cat_total)
            fav2 = bl(cat_cum, rnd() * cat_total)
            if has_children and rnd() < 0.5:
                fav2 = kids_idx

            # orders: geometric count, days between max(signup, 2023-01-01) and DATA_END
            k = int(log(1.0 - rnd()) / log_keep)
            spent_cents = 0
            if k:
                first_day = sidx - orders_offset
                if first_day <= 0:
                    j = 0
                else:
                    j = bl(day_pool, first_day)
                stamps = []
                if j < DAY_POOL:
                    width = DAY_POOL - j
                    for _ in range(k):
                        stamps.append(order_days[day_pool[j + int(rnd() * width)]]
                                      + time_pool[int(rnd() * TIME_POOL)])
                else:                                  # signed up in the very last days
                    width = n_order_days - first_day
                    for _ in range(k):
                        stamps.append(order_days[first_day + int(rnd() * width)]
                                      + time_pool[int(rnd() * TIME_POOL)])
                stamps.sort()
                cid_s = "," + str(cid) + ","
                for ts in stamps:
                    order_id += 1
                    u = rnd()
                    ci = fav1 if u < 0.45 else (fav2 if u < 0.65 else bl(cat_cum, rnd() * cat_total))
                    tail, cents = order_tails[ci][int(rnd() * PRICE_POOL)]
                    spent_cents += cents
                    orow_buf.append(str(order_id) + cid_s + ts + tail)
                n_orders += k

            # 1 point per euro spent, a signup bonus, occasional campaign bonus
            points = spent_cents // 100 + (100 if rnd() < 0.6 else 0)
            if rnd() < 0.1:
                points += 250 * (1 + int(rnd() * 4))

            crow_buf.append((cid, email, first, last, phone, bday, postcode, sex, city, interest,
                             "t" if has_children else "f", signup_days[sidx], points))
            if len(crow_buf) >= 20000:
                cw.writerows(crow_buf)
                of.write("".join(orow_buf))
                crow_buf.clear()
                orow_buf.clear()
        cw.writerows(crow_buf)
        of.write("".join(orow_buf))
    return n_orders, health_count, t_path, o_path


def main():
    ap = argparse.ArgumentParser(description="Deterministic synthetic customers/orders CSV for pg_mseg.")
    ap.add_argument("--customers", type=int, default=100000, help="number of customers (default 100000)")
    ap.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    ap.add_argument("--out", default=".", help="output directory (created if missing; default .)")
    args = ap.parse_args()
    if args.customers < 0 or args.customers > 90_000_000:
        ap.error("--customers must be between 0 and 90000000")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.monotonic()
    n_orders, n_health, c_path, o_path = generate(args.customers, args.seed, args.out)
    dt = time.monotonic() - t0
    print("gen_customers: %d customers (%d with health_interest), %d orders, seed %d -> %s, %s in %.1f s"
          % (args.customers, n_health, n_orders, args.seed, c_path, o_path, dt), file=sys.stderr)


if __name__ == "__main__":
    main()
