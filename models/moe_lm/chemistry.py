"""The `chemistry` domain: generated worksheets of balanced equations, molar masses and mole calculations.

This is the corpus's symbol-system domain. Its text is unlike the other four: element symbols with
subscript digits and parentheses (`Al2(SO4)3`), stoichiometric coefficients, arrows and state symbols.
Every equation is balanced exactly (a small rational null-space solve over the element-count matrix) and
every molar mass is computed from standard atomic weights, so the text has real structure to learn.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction
from functools import cache
from math import gcd, lcm

ATOMIC_MASS: dict[str, float] = {
    "H": 1.008, "Li": 6.94, "C": 12.011, "N": 14.007, "O": 15.999, "F": 18.998, "Na": 22.990,
    "Mg": 24.305, "Al": 26.982, "Si": 28.085, "P": 30.974, "S": 32.06, "Cl": 35.45, "K": 39.098,
    "Ca": 40.078, "Fe": 55.845, "Cu": 63.546, "Zn": 65.38, "Br": 79.904, "Ag": 107.868, "I": 126.904,
    "Ba": 137.327, "Pb": 207.2,
}  # fmt: skip

# Cations: symbol → charge. Anions: group → charge (the acid is H_charge + group).
METALS: dict[str, int] = {
    "Li": 1, "Na": 1, "K": 1, "Ag": 1, "Mg": 2, "Ca": 2, "Ba": 2, "Zn": 2, "Cu": 2, "Fe": 3, "Al": 3, "Pb": 2,
}  # fmt: skip
ANIONS: dict[str, int] = {"Cl": 1, "Br": 1, "I": 1, "NO3": 1, "SO4": 2, "CO3": 2, "PO4": 3}
ACIDS: dict[str, str] = {"Cl": "HCl", "Br": "HBr", "I": "HI", "NO3": "HNO3", "SO4": "H2SO4", "PO4": "H3PO4"}
REACTIVE_METALS = ("Li", "Na", "K", "Mg", "Ca", "Zn", "Fe", "Al")
HALOGENS = {"Cl": "Cl2", "Br": "Br2", "I": "I2"}
HALOGEN_STATES = {"Cl2": "g", "Br2": "l", "I2": "s"}
INSOLUBLE_HYDROXIDES = ("Mg", "Al", "Fe", "Cu", "Zn")
OXIDE_METALS = ("Li", "Na", "K", "Mg", "Ca", "Ba", "Zn", "Cu", "Fe", "Al")

ALKANES = ("methane", "ethane", "propane", "butane", "pentane", "hexane", "heptane", "octane")
ALKENES = ("ethene", "propene", "butene", "pentene", "hexene")
ALCOHOLS = ("methanol", "ethanol", "propanol", "butanol", "pentanol")

_TOKEN = re.compile(r"([A-Z][a-z]?|\(|\)|\d+)")


def parse_formula(formula: str) -> Counter[str]:
    """Element counts of a formula such as `Ca(OH)2` or `C2H5OH`; ValueError on anything else."""
    parts = _TOKEN.findall(formula)
    if "".join(parts) != formula:
        raise ValueError(f"not a formula: {formula!r}")
    stack: list[Counter[str]] = [Counter()]
    i = 0
    while i < len(parts):
        part = parts[i]
        i += 1
        if part == "(":
            stack.append(Counter())
            continue
        if part.isdigit():
            raise ValueError(f"misplaced count in {formula!r}")
        count = 1
        if i < len(parts) and parts[i].isdigit():
            count = int(parts[i])
            i += 1
        if part == ")":
            if len(stack) == 1:
                raise ValueError(f"unbalanced parentheses in {formula!r}")
            group = stack.pop()
            for element, n in group.items():
                stack[-1][element] += n * count
        elif part in ATOMIC_MASS:
            stack[-1][part] += count
        else:
            raise ValueError(f"unknown element {part!r} in {formula!r}")
    if len(stack) != 1:
        raise ValueError(f"unbalanced parentheses in {formula!r}")
    return stack[0]


def molar_mass(formula: str) -> float:
    return sum(ATOMIC_MASS[element] * n for element, n in parse_formula(formula).items())


def _group(symbol: str, count: int) -> str:
    """`SO4`×3 → `(SO4)3`, `Cl`×2 → `Cl2`, anything ×1 → itself."""
    if count == 1:
        return symbol
    polyatomic = len(parse_formula(symbol)) > 1 or sum(parse_formula(symbol).values()) > 1
    return f"({symbol}){count}" if polyatomic else f"{symbol}{count}"


def salt(cation: str, cation_charge: int, anion: str, anion_charge: int) -> str:
    """The neutral formula of an ionic compound, e.g. ("Al", 3, "SO4", 2) → `Al2(SO4)3`."""
    common = gcd(cation_charge, anion_charge)
    return _group(cation, anion_charge // common) + _group(anion, cation_charge // common)


def hydroxide(metal: str) -> str:
    return salt(metal, METALS[metal], "OH", 1)


def oxide(metal: str) -> str:
    return salt(metal, METALS[metal], "O", 2)


def alkane(n: int) -> str:
    return f"C{n if n > 1 else ''}H{2 * n + 2}"


def alkene(n: int) -> str:
    return f"C{n}H{2 * n}"


def alcohol(n: int) -> str:
    return f"C{n if n > 1 else ''}H{2 * n + 1}OH"


@cache
def balance(reactants: tuple[str, ...], products: tuple[str, ...]) -> tuple[int, ...] | None:
    """Smallest positive integer coefficients that balance the equation, or None when there is no unique
    balance (a null space that is not one-dimensional or not all positive)."""
    species = [parse_formula(f) for f in (*reactants, *products)]
    elements = sorted({e for s in species for e in s})
    signs = [1] * len(reactants) + [-1] * len(products)
    matrix = [
        [Fraction(sign * s.get(e, 0)) for s, sign in zip(species, signs, strict=True)] for e in elements
    ]
    n = len(species)
    pivots: list[int] = []
    row = 0
    for col in range(n):
        pivot = next((r for r in range(row, len(matrix)) if matrix[r][col] != 0), None)
        if pivot is None:
            continue
        matrix[row], matrix[pivot] = matrix[pivot], matrix[row]
        lead = matrix[row][col]
        matrix[row] = [x / lead for x in matrix[row]]
        for r in range(len(matrix)):
            if r != row and matrix[r][col] != 0:
                factor = matrix[r][col]
                matrix[r] = [a - factor * b for a, b in zip(matrix[r], matrix[row], strict=True)]
        pivots.append(col)
        row += 1
    free = [c for c in range(n) if c not in pivots]
    if len(free) != 1:
        return None
    solution = [Fraction(0)] * n
    solution[free[0]] = Fraction(1)
    for r, col in enumerate(pivots):
        solution[col] = -matrix[r][free[0]]
    if any(x <= 0 for x in solution):
        return None
    scale = lcm(*(x.denominator for x in solution))
    ints = [int(x * scale) for x in solution]
    common = gcd(*ints)
    return tuple(i // common for i in ints)


def equation(
    reactants: tuple[str, ...], products: tuple[str, ...], states: dict[str, str] | None = None
) -> str:
    """`2 H2 + O2 -> 2 H2O`, with state symbols appended when `states` maps a formula to one."""
    coefficients = balance(reactants, products)
    if coefficients is None:
        raise ValueError(f"cannot balance {reactants} -> {products}")
    states = states or {}

    def term(c: int, f: str) -> str:
        return (f"{c} " if c > 1 else "") + f + (f"({states[f]})" if f in states else "")

    left = " + ".join(term(c, f) for c, f in zip(coefficients, reactants, strict=False))
    right = " + ".join(term(c, f) for c, f in zip(coefficients[len(reactants) :], products, strict=True))
    return f"{left} -> {right}"


def _reaction(rng: random.Random) -> tuple[str, tuple[str, ...], tuple[str, ...], dict[str, str]]:
    """One reaction: a heading word, reactants, products and the state symbols to show."""
    kind = rng.choice(("combustion", "neutralization", "metal-acid", "oxidation", "halide", "decomposition",
                       "precipitation"))  # fmt: skip
    if kind == "combustion":
        family = rng.choice(("alkane", "alkene", "alcohol"))
        if family == "alkane":
            i = rng.randrange(len(ALKANES))
            name, fuel = ALKANES[i], alkane(i + 1)
        elif family == "alkene":
            i = rng.randrange(len(ALKENES))
            name, fuel = ALKENES[i], alkene(i + 2)
        else:
            i = rng.randrange(len(ALCOHOLS))
            name, fuel = ALCOHOLS[i], alcohol(i + 1)
        states = {fuel: "g" if family != "alcohol" else "l", "O2": "g", "CO2": "g", "H2O": "l"}
        return f"combustion of {name}", (fuel, "O2"), ("CO2", "H2O"), states
    if kind == "neutralization":
        anion = rng.choice(sorted(ACIDS))
        metal = rng.choice(("Li", "Na", "K", "Mg", "Ca", "Ba", "Al"))
        acid, base = ACIDS[anion], hydroxide(metal)
        product = salt(metal, METALS[metal], anion, ANIONS[anion])
        return (
            "neutralization",
            (acid, base),
            (product, "H2O"),
            {acid: "aq", base: "s" if metal in INSOLUBLE_HYDROXIDES else "aq", product: "aq", "H2O": "l"},
        )
    if kind == "metal-acid":
        metal = rng.choice(REACTIVE_METALS)
        anion = rng.choice(("Cl", "Br", "SO4", "NO3"))
        acid = ACIDS[anion]
        product = salt(metal, METALS[metal], anion, ANIONS[anion])
        return (
            "metal and acid",
            (metal, acid),
            (product, "H2"),
            {metal: "s", acid: "aq", product: "aq", "H2": "g"},
        )
    if kind == "oxidation":
        metal = rng.choice(OXIDE_METALS)
        product = oxide(metal)
        return "oxidation", (metal, "O2"), (product,), {metal: "s", "O2": "g", product: "s"}
    if kind == "halide":
        metal = rng.choice(REACTIVE_METALS)
        halogen = rng.choice(sorted(HALOGENS))
        product = salt(metal, METALS[metal], halogen, 1)
        element = HALOGENS[halogen]
        return (
            "synthesis",
            (metal, element),
            (product,),
            {metal: "s", element: HALOGEN_STATES[element], product: "s"},
        )
    if kind == "decomposition":
        metal = rng.choice(("Mg", "Ca", "Ba", "Zn", "Cu", "Pb"))
        carbonate = salt(metal, METALS[metal], "CO3", 2)
        product = oxide(metal)
        return "decomposition", (carbonate,), (product, "CO2"), {carbonate: "s", product: "s", "CO2": "g"}
    # precipitation: two soluble salts swap partners; silver halides, barium sulfate and carbonates drop out
    metal, anion = rng.choice((("Ag", "Cl"), ("Ag", "Br"), ("Ag", "I"), ("Ba", "SO4"), ("Pb", "I"),
                               ("Ca", "CO3"), ("Ba", "CO3"), ("Ca", "PO4")))  # fmt: skip
    partner_metal = rng.choice(("Na", "K", "Li"))
    first = salt(metal, METALS[metal], "NO3", 1)
    second = salt(partner_metal, 1, anion, ANIONS[anion])
    solid = salt(metal, METALS[metal], anion, ANIONS[anion])
    spectator = salt(partner_metal, 1, "NO3", 1)
    states = {first: "aq", second: "aq", solid: "s", spectator: "aq"}
    return "precipitation", (first, second), (solid, spectator), states


def chemistry_line(rng: random.Random, with_states: bool) -> str:
    """One worksheet line: an equation, a molar mass or a mass-to-moles conversion."""
    heading, reactants, products, states = _reaction(rng)
    roll = rng.random()
    if roll < 0.55:
        text = equation(reactants, products, states if with_states else None)
        return f"{heading}: {text}" if rng.random() < 0.5 else text
    compound = rng.choice(
        [f for f in (*reactants, *products) if len(parse_formula(f)) > 1] or list(reactants)
    )
    mass = molar_mass(compound)
    if roll < 0.8:
        return f"M({compound}) = {mass:.2f} g/mol"
    grams = round(rng.uniform(0.5, 250.0), 1)
    return f"n({compound}) = {grams} g / {mass:.2f} g/mol = {grams / mass:.3f} mol"


def chemistry_document(rng: random.Random, lines: int) -> list[str]:
    """A worksheet: `lines` lines; state symbols are on or off for the whole sheet."""
    with_states = rng.random() < 0.4
    return [chemistry_line(rng, with_states) for _ in range(lines)]
