"""Static reference data for the simulator's instrument universe: real anchors and underlyings.

Real tokens are kept for the instruments people test with (INFY 408065, NIFTY 50 256265, ...).
"""

from __future__ import annotations

from typing import NamedTuple


class Listed(NamedTuple):
    """An instrument with a fixed, real exchange token."""

    symbol: str
    name: str
    exchange_token: int
    price: float


class Underlying(NamedTuple):
    """A derivatives underlying: its spot, strike spacing, lot, and how many strikes each side."""

    name: str
    spot: float
    strike_step: float
    lot_size: int
    strikes_each_side: int
    tick_size: float


# Index rows (segment 9). exchange_token << 8 | 9 gives the real instrument token.
NSE_INDICES = (
    Listed("NIFTY 50", "NIFTY 50", 1001, 24150.0),  # 256265
    Listed("NIFTY BANK", "NIFTY BANK", 1016, 51830.0),  # 260105
    Listed("NIFTY IT", "NIFTY IT", 1015, 41200.0),  # 259849
    Listed("NIFTY FIN SERVICE", "NIFTY FIN SERVICE", 1007, 23710.0),  # 257801
    Listed("INDIA VIX", "INDIA VIX", 1035, 14.35),  # 264969
    Listed("NIFTY NEXT 50", "NIFTY NEXT 50", 1058, 70250.0),  # 270857
    Listed("NIFTY MID SELECT", "NIFTY MID SELECT", 1125, 12480.0),  # 288009
)
BSE_INDICES = (
    Listed("SENSEX", "SENSEX", 1, 79480.0),  # 265
    Listed("BANKEX", "BANKEX", 1072, 58200.0),  # 274441
)

# NSE equities with their real exchange tokens (token = exchange_token << 8 | 1).
NSE_EQUITIES = (
    Listed("INFY", "INFOSYS", 1594, 1874.35),
    Listed("RELIANCE", "RELIANCE INDUSTRIES", 2885, 1290.6),
    Listed("ACC", "ACC", 22, 2115.4),
    Listed("TCS", "TATA CONSULTANCY SERV LT", 11536, 4120.0),
    Listed("HDFCBANK", "HDFC BANK", 1333, 1745.55),
    Listed("ICICIBANK", "ICICI BANK", 4963, 1280.25),
    Listed("SBIN", "STATE BANK OF INDIA", 3045, 822.9),
    Listed("ITC", "ITC", 1660, 478.15),
    Listed("AXISBANK", "AXIS BANK", 5900, 1138.7),
    Listed("KOTAKBANK", "KOTAK MAHINDRA BANK", 1922, 1762.0),
    Listed("LT", "LARSEN & TOUBRO", 11483, 3611.45),
    Listed("HINDUNILVR", "HINDUSTAN UNILEVER.", 1394, 2380.3),
    Listed("BHARTIARTL", "BHARTI AIRTEL", 10604, 1602.85),
    Listed("WIPRO", "WIPRO", 3787, 298.4),
    Listed("TATAMOTORS", "TATA MOTORS", 3456, 782.55),
    Listed("MARUTI", "MARUTI SUZUKI INDIA", 10999, 11120.0),
    Listed("SUNPHARMA", "SUN PHARMACEUTICAL IND L", 3351, 1810.65),
    Listed("BAJFINANCE", "BAJAJ FINANCE", 317, 6890.1),
    Listed("ASIANPAINT", "ASIAN PAINTS", 236, 2460.75),
    Listed("TITAN", "TITAN COMPANY", 3506, 3270.2),
)
# Their BSE listings, keyed by BSE scrip code (token = scrip_code << 8 | 4).
BSE_SCRIP_CODES = {
    "INFY": 500209, "RELIANCE": 500325, "ACC": 500410, "TCS": 532540, "HDFCBANK": 500180,
    "ICICIBANK": 532174, "SBIN": 500112, "ITC": 500875, "AXISBANK": 532215, "KOTAKBANK": 500247,
    "LT": 500510, "HINDUNILVR": 500696, "BHARTIARTL": 532454, "WIPRO": 507685,
    "TATAMOTORS": 500570, "MARUTI": 532500, "SUNPHARMA": 524715, "BAJFINANCE": 500034,
    "ASIANPAINT": 500820, "TITAN": 500114,
}

# Index derivatives: NFO ones expire weekly on Thursdays, BFO ones on Fridays.
NFO_INDEX_UNDERLYINGS = (
    Underlying("NIFTY", 24150.0, 50.0, 75, 75, 0.05),
    Underlying("BANKNIFTY", 51830.0, 100.0, 30, 75, 0.05),
    Underlying("FINNIFTY", 23710.0, 50.0, 65, 50, 0.05),
    Underlying("MIDCPNIFTY", 12480.0, 25.0, 120, 50, 0.05),
)
BFO_INDEX_UNDERLYINGS = (
    Underlying("SENSEX", 79480.0, 100.0, 20, 75, 0.05),
    Underlying("BANKEX", 58200.0, 100.0, 30, 50, 0.05),
)
MCX_UNDERLYINGS = (
    Underlying("CRUDEOIL", 5980.0, 50.0, 100, 20, 1.0),
    Underlying("NATURALGAS", 254.3, 5.0, 1250, 20, 0.1),
    Underlying("GOLD", 76250.0, 100.0, 1, 20, 1.0),
    Underlying("SILVER", 89400.0, 250.0, 30, 20, 1.0),
    Underlying("COPPER", 812.4, 5.0, 2500, 0, 0.05),
    Underlying("ZINC", 268.15, 2.5, 5000, 0, 0.05),
    Underlying("ALUMINIUM", 236.9, 2.5, 5000, 0, 0.05),
    Underlying("LEAD", 182.35, 1.0, 5000, 0, 0.05),
    Underlying("GOLDM", 76210.0, 100.0, 10, 0, 1.0),
    Underlying("SILVERM", 89370.0, 250.0, 5, 0, 1.0),
)
# Currency pairs: CDS prices carry 7 decimals on the wire, BCD 4.
CURRENCY_UNDERLYINGS = (
    Underlying("USDINR", 84.4025, 0.25, 1, 30, 0.0025),
    Underlying("EURINR", 89.1250, 0.25, 1, 20, 0.0025),
    Underlying("GBPINR", 107.0500, 0.25, 1, 20, 0.0025),
    Underlying("JPYINR", 55.6400, 0.25, 1, 0, 0.0025),
)

SYLLABLES = (
    "AB", "AD", "AL", "AM", "AN", "AR", "BA", "BE", "BH", "BI", "CA", "CE", "CH", "DA", "DE",
    "DI", "EN", "ER", "FI", "GA", "GO", "HA", "IN", "JA", "KA", "KO", "LA", "LI", "MA", "ME",
    "MI", "NA", "NE", "NI", "OM", "PA", "PO", "RA", "RE", "RI", "SA", "SH", "SI", "TA", "TE",
    "TI", "UN", "VA", "VI", "YA", "ZE",
)
COMPANY_SUFFIXES = ("LTD", "INDUSTRIES", "FINANCE", "PHARMA", "INFRA", "TECH", "POWER", "STEEL")
