"""The generated domains `arithmetic` and `json`: exercise sheets and realistic JSON records.

Both are produced from a `random.Random`, so a seed fixes the text exactly on every machine. Arithmetic
lines are correct (the model can learn carrying, not just the format); JSON records use the keys and
value shapes of real application data (users, orders, products, events, sensor readings, books).
"""

from __future__ import annotations

import json
import random
from typing import Any

FIRST_NAMES = (
    "Alice", "Bruno", "Chen", "Dana", "Elif", "Farah", "Goran", "Hana", "Ivan", "Julia", "Kofi", "Lena",
    "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Victor", "Wei", "Yara",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Garcia", "Nguyen", "Müller", "Rossi", "Kowalski", "Okafor", "Tanaka", "Silva", "Dubois",
    "Ivanova", "Haddad", "Larsen", "Patel", "Kim", "Novak", "Schmidt", "Costa", "Moreau", "Jensen",
)  # fmt: skip
CITIES = (
    ("Lisbon", "PT"), ("Berlin", "DE"), ("Osaka", "JP"), ("Toronto", "CA"), ("Lagos", "NG"), ("Lyon", "FR"),
    ("Austin", "US"), ("Krakow", "PL"), ("Pune", "IN"), ("Seoul", "KR"), ("Porto", "PT"), ("Oslo", "NO"),
)  # fmt: skip
STREETS = ("Main St", "Oak Avenue", "Harbour Road", "Station Street", "Elm Court", "Mill Lane", "Park Row")
PRODUCTS = (
    ("wireless mouse", "electronics"), ("usb-c cable", "electronics"), ("desk lamp", "home"),
    ("coffee grinder", "kitchen"), ("running shoes", "sports"), ("yoga mat", "sports"),
    ("notebook", "office"), ("fountain pen", "office"), ("water bottle", "outdoor"), ("tent", "outdoor"),
    ("headphones", "electronics"), ("teapot", "kitchen"), ("backpack", "outdoor"),
    ("monitor stand", "office"),
)  # fmt: skip
ORDER_STATUS = ("pending", "paid", "shipped", "delivered", "cancelled", "refunded")
EVENT_TYPES = ("page_view", "click", "signup", "login", "logout", "add_to_cart", "checkout", "search")
CURRENCIES = ("EUR", "USD", "GBP", "JPY", "CAD")
TAGS = ("new", "sale", "eco", "bestseller", "limited", "gift", "premium", "clearance")
BOOK_WORDS = ("Silent", "River", "Garden", "Night", "Glass", "Winter", "Empire", "Paper", "Stone", "Echo")
GENRES = ("fiction", "history", "science", "poetry", "mystery", "biography", "fantasy")
SENSOR_KINDS = (
    ("temperature", "°C", 15.0, 30.0),
    ("humidity", "%", 20.0, 80.0),
    ("pressure", "hPa", 980, 1040),
)


# ---------------------------------------------------------------- arithmetic


def arithmetic_line(rng: random.Random) -> str:
    """One correct exercise: +, −, ×, exact ÷, or a two-step expression with its intermediate result."""
    kind = rng.choices(("add", "sub", "mul", "div", "chain", "paren"), weights=(3, 2, 3, 1, 2, 2))[0]
    if kind == "add":
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        return f"{a} + {b} = {a + b}"
    if kind == "sub":
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        a, b = max(a, b), min(a, b)
        return f"{a} - {b} = {a - b}"
    if kind == "mul":
        a, b = rng.randint(2, 99), rng.randint(2, 12 if rng.random() < 0.5 else 99)
        return f"{a} * {b} = {a * b}"
    if kind == "div":
        b, q = rng.randint(2, 12), rng.randint(2, 99)
        return f"{b * q} / {b} = {q}"
    if kind == "chain":
        a, b, c = rng.randint(1, 99), rng.randint(1, 99), rng.randint(1, 99)
        return f"{a} + {b} + {c} = {a + b} + {c} = {a + b + c}"
    a, b, c = rng.randint(1, 50), rng.randint(1, 50), rng.randint(2, 9)
    return f"({a} + {b}) * {c} = {a + b} * {c} = {(a + b) * c}"


def arithmetic_document(rng: random.Random, lines: int) -> list[str]:
    return [arithmetic_line(rng) for _ in range(lines)]


# ---------------------------------------------------------------- JSON records


def _date(rng: random.Random) -> str:
    return f"20{rng.randint(18, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _timestamp(rng: random.Random) -> str:
    return f"{_date(rng)}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def _email(first: str, last: str, rng: random.Random) -> str:
    ascii_last = last.replace("ü", "ue").lower()
    domain = rng.choice(("example.com", "mail.test", "corp.example", "inbox.example"))
    return f"{first.lower()}.{ascii_last}@{domain}"


def _record(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(("user", "order", "product", "event", "reading", "book"))
    if kind == "user":
        first, last = _person(rng)
        city, country = rng.choice(CITIES)
        return {
            "id": rng.randint(1000, 99999),
            "name": f"{first} {last}",
            "email": _email(first, last, rng),
            "age": rng.randint(18, 80),
            "active": rng.random() < 0.8,
            "address": {
                "street": f"{rng.randint(1, 200)} {rng.choice(STREETS)}",
                "city": city,
                "country": country,
            },
            "created_at": _timestamp(rng),
        }
    if kind == "order":
        items = []
        for _ in range(rng.randint(1, 3)):
            name, _category = rng.choice(PRODUCTS)
            sku = f"SKU-{rng.randint(10000, 99999)}"
            quantity, price = rng.randint(1, 5), round(rng.uniform(2, 300), 2)
            items.append({"sku": sku, "name": name, "quantity": quantity, "unit_price": price})
        total = round(sum(i["quantity"] * i["unit_price"] for i in items), 2)
        return {
            "order_id": f"ORD-{rng.randint(100000, 999999)}",
            "customer_id": rng.randint(1000, 99999),
            "status": rng.choice(ORDER_STATUS),
            "items": items,
            "total": total,
            "currency": rng.choice(CURRENCIES),
            "placed_at": _timestamp(rng),
        }
    if kind == "product":
        name, category = rng.choice(PRODUCTS)
        return {
            "sku": f"SKU-{rng.randint(10000, 99999)}",
            "name": name,
            "category": category,
            "price": round(rng.uniform(2, 300), 2),
            "in_stock": rng.randint(0, 500),
            "tags": rng.sample(TAGS, rng.randint(0, 3)),
            "rating": round(rng.uniform(1, 5), 1),
        }
    if kind == "event":
        return {
            "event": rng.choice(EVENT_TYPES),
            "user_id": rng.randint(1000, 99999),
            "session": f"{rng.getrandbits(32):08x}",
            "timestamp": _timestamp(rng),
            "properties": {
                "path": rng.choice(("/", "/cart", "/search", "/account", "/products")),
                "referrer": rng.choice((None, "google", "newsletter", "direct")),
            },
        }
    if kind == "reading":
        sensor, unit, low, high = rng.choice(SENSOR_KINDS)
        return {
            "device_id": f"dev-{rng.randint(1, 64):03d}",
            "sensor": sensor,
            "value": round(rng.uniform(low, high), 2),
            "unit": unit,
            "battery": rng.randint(5, 100),
            "recorded_at": _timestamp(rng),
        }
    first, last = _person(rng)
    return {
        "isbn": "-".join(
            str(n)
            for n in (
                978,
                rng.randint(0, 9),
                rng.randint(1000, 9999),
                rng.randint(1000, 9999),
                rng.randint(0, 9),
            )
        ),
        "title": f"The {rng.choice(BOOK_WORDS)} {rng.choice(BOOK_WORDS)}",
        "author": f"{first} {last}",
        "year": rng.randint(1950, 2024),
        "genre": rng.choice(GENRES),
        "pages": rng.randint(90, 900),
        "available": rng.random() < 0.7,
    }


def json_document(rng: random.Random, records: int) -> str:
    """`records` records in one of three layouts: pretty array, JSON Lines, or one compact array."""
    items = [_record(rng) for _ in range(records)]
    layout = rng.choice(("pretty", "lines", "compact"))
    if layout == "pretty":
        return json.dumps(items, indent=2, ensure_ascii=False)
    if layout == "lines":
        return "\n".join(json.dumps(item, ensure_ascii=False) for item in items)
    return json.dumps(items, ensure_ascii=False)
