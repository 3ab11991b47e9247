-- Master key: fingerprint, every key-file error, reload on SIGHUP.
SELECT mseg.key_fingerprint() ~ '^mseg1:[0-9a-f]{16}$' AS fingerprint_format;
SELECT mseg.key_fingerprint() AS original_fp \gset
SELECT mseg.create_domain('keys_test');
SELECT mseg.pseudonym('alice@example.com', 'keys_test') AS original_p \gset

-- The setting is superuser-only and only changes through the configuration file (SIGHUP).
SELECT name, context, source <> 'default' AS is_set FROM pg_settings WHERE name LIKE 'mseg.%' ORDER BY 1;
SELECT * FROM try($$SET mseg.key_file = '/tmp/x'$$);
SELECT * FROM try($$SET mseg.keyfile = '/tmp/x'$$);

\! mkdir -p /tmp/pg_mseg_regress/keys && cd /tmp/pg_mseg_regress/keys && umask 077 && head -c 32 /dev/urandom > other.key && printf 'SECRETSECRETSECRET' > short.key && head -c 40 /dev/urandom > open.key && chmod 0644 open.key && mkdir -p adir && head -c 5000 /dev/urandom > big.key && head -c 32 /dev/urandom > group.key && chmod 0640 group.key

-- missing file
ALTER SYSTEM SET mseg.key_file = '/tmp/pg_mseg_regress/keys/missing.key';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT * FROM try('SELECT mseg.key_fingerprint()');
SELECT * FROM try($$SELECT mseg.pseudonym('x', 'keys_test')$$);

-- readable by others
ALTER SYSTEM SET mseg.key_file = '/tmp/pg_mseg_regress/keys/open.key';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT * FROM try('SELECT mseg.key_fingerprint()');

-- readable by group
ALTER SYSTEM SET mseg.key_file = '/tmp/pg_mseg_regress/keys/group.key';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT * FROM try('SELECT mseg.key_fingerprint()');

-- too short (its bytes must appear in no message and no log line)
ALTER SYSTEM SET mseg.key_file = '/tmp/pg_mseg_regress/keys/short.key';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT * FROM try('SELECT mseg.key_fingerprint()');

-- a directory
ALTER SYSTEM SET mseg.key_file = '/tmp/pg_mseg_regress/keys/adir';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT * FROM try('SELECT mseg.key_fingerprint()');

-- far too large to be a key
ALTER SYSTEM SET mseg.key_file = '/tmp/pg_mseg_regress/keys/big.key';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT * FROM try('SELECT mseg.key_fingerprint()');

-- not set at all
ALTER SYSTEM SET mseg.key_file = '';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT * FROM try('SELECT mseg.key_fingerprint()');

-- another valid key: new fingerprint, new pseudonyms (the old cached keys are gone)
ALTER SYSTEM SET mseg.key_file = '/tmp/pg_mseg_regress/keys/other.key';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT mseg.key_fingerprint() <> :'original_fp' AS fingerprint_changed;
SELECT mseg.pseudonym('alice@example.com', 'keys_test') <> :'original_p' AS pseudonym_changed;

-- back to the configured key: the original fingerprint and pseudonyms return
ALTER SYSTEM RESET mseg.key_file;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT mseg.key_fingerprint() = :'original_fp' AS fingerprint_restored;
SELECT mseg.pseudonym('alice@example.com', 'keys_test') = :'original_p' AS pseudonym_restored;
SELECT mseg.drop_domain('keys_test');
