-- The 50 segment definitions of bench/segments, loaded into both benchmark databases:
--   plain  builds its CREATE TABLE … AS SELECT (the baseline of refresh_segments()) from them;
--   seg    passes them to mseg.define_segment before the timed loads.
-- 40 read only the subject row (alias s), 10 also read public.orders (behavioural).
-- Purposes (defined by bench/segments in seg):
--   direct_marketing     {consent, legitimate_interest}, 2 years
--   personalised_offers  {consent}, 1 year  (the two sensitive segments are bound to it: Art. 9)
-- Values follow scripts/gen_customers.py (birth dates 1940-2007, signups 2015-2026, orders
-- 2023-01-01 .. 2026-10-31, German postcodes and cities). Segments on current_date are
-- time-dependent; they change at midnight, not during a statement.

CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE bench.segment_defs (
    ord       int  PRIMARY KEY,
    name      text NOT NULL UNIQUE,
    purpose   text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('row', 'orders')),
    predicate text NOT NULL
);

INSERT INTO bench.segment_defs (ord, name, purpose, kind, predicate) VALUES
-- age bands
( 1, 'age_under_28',          'direct_marketing',    'row', $$ s.birth_date >= date '1998-01-01' $$),
( 2, 'age_25_34',             'direct_marketing',    'row', $$ s.birth_date BETWEEN date '1992-01-01' AND date '2001-12-31' $$),
( 3, 'age_35_44',             'direct_marketing',    'row', $$ s.birth_date BETWEEN date '1982-01-01' AND date '1991-12-31' $$),
( 4, 'age_45_59',             'direct_marketing',    'row', $$ s.birth_date BETWEEN date '1967-01-01' AND date '1981-12-31' $$),
( 5, 'age_65_plus',           'direct_marketing',    'row', $$ s.birth_date < date '1962-01-01' $$),
-- places
( 6, 'berlin_postcodes',      'direct_marketing',    'row', $$ s.postcode >= '10000' AND s.postcode < '14200' $$),
( 7, 'hamburg_postcodes',     'direct_marketing',    'row', $$ s.postcode LIKE '2%' AND s.postcode < '22800' $$),
( 8, 'munich',                'direct_marketing',    'row', $$ s.city = 'München' $$),
( 9, 'rhineland',             'direct_marketing',    'row', $$ s.city IN ('Köln', 'Düsseldorf', 'Bonn', 'Leverkusen', 'Krefeld', 'Mönchengladbach') $$),
(10, 'ruhr_area',             'direct_marketing',    'row', $$ s.city IN ('Dortmund', 'Essen', 'Bochum', 'Gelsenkirchen', 'Oberhausen', 'Hagen', 'Hamm') $$),
(11, 'east_outside_berlin',   'direct_marketing',    'row', $$ (s.postcode < '20000' OR s.postcode LIKE '9%') AND s.city <> 'Berlin' AND s.postcode NOT LIKE '90%' $$),
(12, 'south_west',            'direct_marketing',    'row', $$ s.postcode >= '68000' AND s.postcode < '80000' $$),
(13, 'bavaria',               'direct_marketing',    'row', $$ s.postcode >= '80000' AND s.postcode < '98000' $$),
(14, 'small_towns',           'direct_marketing',    'row', $$ s.city NOT IN ('Berlin', 'Hamburg', 'München', 'Köln', 'Frankfurt am Main', 'Stuttgart', 'Düsseldorf',
                                                                                'Leipzig', 'Dortmund', 'Essen', 'Bremen', 'Dresden', 'Hannover', 'Nürnberg') $$),
(15, 'postcode_region_4',     'direct_marketing',    'row', $$ left(s.postcode, 1) = '4' $$),
(16, 'postcode_region_6',     'direct_marketing',    'row', $$ left(s.postcode, 1) = '6' $$),
-- sex, family, combinations
(17, 'women_25_44',           'direct_marketing',    'row', $$ s.sex = 'f' AND s.birth_date BETWEEN date '1982-01-01' AND date '2001-12-31' $$),
(18, 'men_25_44',             'direct_marketing',    'row', $$ s.sex = 'm' AND s.birth_date BETWEEN date '1982-01-01' AND date '2001-12-31' $$),
(19, 'gender_diverse',        'direct_marketing',    'row', $$ s.sex = 'd' $$),
(20, 'parents_30_50',         'direct_marketing',    'row', $$ s.has_children AND s.birth_date BETWEEN date '1976-01-01' AND date '1996-12-31' $$),
(21, 'young_parents',         'direct_marketing',    'row', $$ s.has_children AND s.birth_date >= date '1992-01-01' $$),
(22, 'urban_singles',         'direct_marketing',    'row', $$ NOT s.has_children AND s.city IN ('Berlin', 'Hamburg', 'München', 'Köln') AND s.birth_date >= date '1985-01-01' $$),
(23, 'hamburg_families',      'direct_marketing',    'row', $$ s.city = 'Hamburg' AND s.has_children $$),
(24, 'munich_under_36',       'direct_marketing',    'row', $$ s.city = 'München' AND s.birth_date >= date '1990-01-01' $$),
-- loyalty
(25, 'loyalty_bronze',        'direct_marketing',    'row', $$ s.loyalty_points BETWEEN 100 AND 499 $$),
(26, 'loyalty_silver',        'direct_marketing',    'row', $$ s.loyalty_points BETWEEN 500 AND 1499 $$),
(27, 'loyalty_gold',          'direct_marketing',    'row', $$ s.loyalty_points BETWEEN 1500 AND 2999 $$),
(28, 'loyalty_platinum',      'personalised_offers', 'row', $$ s.loyalty_points >= 3000 $$),
(29, 'students_low_points',   'direct_marketing',    'row', $$ s.birth_date >= date '2002-01-01' AND s.loyalty_points < 200 $$),
(30, 'seniors_high_points',   'personalised_offers', 'row', $$ s.birth_date < date '1965-01-01' AND s.loyalty_points >= 1000 $$),
-- signup
(31, 'signed_up_2026',        'direct_marketing',    'row', $$ s.signup_date >= date '2026-01-01' $$),
(32, 'signed_up_2024_2025',   'direct_marketing',    'row', $$ s.signup_date BETWEEN date '2024-01-01' AND date '2025-12-31' $$),
(33, 'customers_since_2017',  'personalised_offers', 'row', $$ s.signup_date < date '2018-01-01' $$),
(34, 'dormant_members',       'direct_marketing',    'row', $$ s.loyalty_points < 100 AND s.signup_date < date '2022-01-01' $$),
(35, 'new_in_big_cities',     'direct_marketing',    'row', $$ s.signup_date >= date '2025-01-01' AND s.city IN ('Berlin', 'Hamburg', 'München') $$),
-- time-dependent (current_date)
(36, 'signup_anniversary',    'personalised_offers', 'row', $$ extract(month FROM s.signup_date) = extract(month FROM current_date) $$),
(37, 'birthday_next_month',   'personalised_offers', 'row', $$ extract(month FROM s.birth_date) = extract(month FROM current_date + 31) $$),
(38, 'round_birthday_year',   'personalised_offers', 'row', $$ (extract(year FROM current_date) - extract(year FROM s.birth_date))::int % 10 = 0 $$),
-- sensitive (GDPR Art. 9): explicit consent only
(39, 'plant_based_diet',      'personalised_offers', 'row', $$ s.health_interest IN ('vegan', 'vegetarian') $$),
(40, 'back_care_45_plus',     'personalised_offers', 'row', $$ s.health_interest = 'back pain' AND s.birth_date < date '1982-01-01' $$),
-- behavioural (orders)
(41, 'runners',               'direct_marketing',    'orders', $$ EXISTS (SELECT 1 FROM public.orders o WHERE o.customer_id = s.customer_id AND o.category = 'running') $$),
(42, 'young_urban_runners',   'direct_marketing',    'orders', $$ s.birth_date > date '1990-01-01' AND s.postcode LIKE '10%'
                                                                     AND EXISTS (SELECT 1 FROM public.orders o WHERE o.customer_id = s.customer_id AND o.category = 'running') $$),
(43, 'keen_cyclists',         'direct_marketing',    'orders', $$ (SELECT count(*) FROM public.orders o WHERE o.customer_id = s.customer_id AND o.category = 'cycling') >= 3 $$),
(44, 'frequent_buyers',       'direct_marketing',    'orders', $$ (SELECT count(*) FROM public.orders o WHERE o.customer_id = s.customer_id) > 8 $$),
(45, 'big_spenders',          'personalised_offers', 'orders', $$ (SELECT sum(o.amount) FROM public.orders o WHERE o.customer_id = s.customer_id) > 1000 $$),
(46, 'bought_last_90_days',   'direct_marketing',    'orders', $$ EXISTS (SELECT 1 FROM public.orders o WHERE o.customer_id = s.customer_id AND o.ordered_at >= current_date - 90) $$),
(47, 'lapsed_customers',      'direct_marketing',    'orders', $$ EXISTS (SELECT 1 FROM public.orders o WHERE o.customer_id = s.customer_id)
                                                                     AND NOT EXISTS (SELECT 1 FROM public.orders o WHERE o.customer_id = s.customer_id AND o.ordered_at >= current_date - 365) $$),
(48, 'winter_sports_families','direct_marketing',    'orders', $$ s.has_children AND EXISTS (SELECT 1 FROM public.orders o WHERE o.customer_id = s.customer_id AND o.category = 'winter_sports') $$),
(49, 'recent_yoga_women',     'personalised_offers', 'orders', $$ s.sex = 'f' AND EXISTS (SELECT 1 FROM public.orders o WHERE o.customer_id = s.customer_id
                                                                     AND o.category = 'yoga' AND o.ordered_at >= current_date - 180) $$),
(50, 'premium_electronics',   'personalised_offers', 'orders', $$ EXISTS (SELECT 1 FROM public.orders o WHERE o.customer_id = s.customer_id
                                                                     AND o.category = 'electronics' AND o.amount > 300) $$);
