# Dates in English as every English reader reads them alike: "6 Dec 2026, 14:05".
# Django's en-us ("12/06/2026 2:05 p.m.") reads as the 12th of June in most of Europe,
# and its long form ("Dec. 6, 2026, 2:05 p.m.") differed from the lists' for one email.
DATE_FORMAT = "j M Y"
DATETIME_FORMAT = "j M Y, H:i"
SHORT_DATE_FORMAT = "j M Y"
SHORT_DATETIME_FORMAT = "j M Y, H:i"
TIME_FORMAT = "H:i"
MONTH_DAY_FORMAT = "j F"
YEAR_MONTH_FORMAT = "F Y"
