//! Rust-level tests, run inside PostgreSQL by `cargo pgrx test` (see scripts/test).
//! The test cluster reads its master key from /tmp/pg_mseg_test.key (made by scripts/test).

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::keys::{self, hkdf_sha256, KeyedMac};
    use crate::{pseudonym, token};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn setup_domains() {
        Spi::run("SELECT mseg.create_domain('t_one'); SELECT mseg.create_domain('t_two')").unwrap();
    }

    // ---- known-answer vectors ------------------------------------------------------------

    #[pg_test]
    fn hmac_sha256_rfc4231_case1_and_2() {
        let mac = KeyedMac::new(&[0x0b; 20]);
        assert_eq!(mac.mac(b"Hi There").to_vec(), hex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));
        let mac = KeyedMac::new(b"Jefe");
        assert_eq!(
            mac.mac(b"what do ya want for nothing?").to_vec(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        // the keyed state is reusable: a second message gives the same answer as a fresh key
        assert_eq!(mac.mac(b"what do ya want for nothing?"), KeyedMac::new(b"Jefe").mac(b"what do ya want for nothing?"));
    }

    #[pg_test]
    fn hkdf_sha256_rfc5869_case1() {
        let mut okm = [0u8; 42];
        hkdf_sha256(&hex("000102030405060708090a0b0c"), &[0x0b; 22], &hex("f0f1f2f3f4f5f6f7f8f9"), &mut okm).unwrap();
        assert_eq!(okm.to_vec(), hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"));
    }

    #[pg_test]
    fn hkdf_rejects_oversized_output() {
        let mut okm = vec![0u8; 255 * 32 + 1];
        assert!(hkdf_sha256(b"s", b"k", b"i", &mut okm).is_err());
    }

    #[pg_test]
    fn aes256_gcm_mcgrew_viega_cases_13_and_14() {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        use aes_gcm::{Aes256Gcm, Nonce};
        let cipher = Aes256Gcm::new_from_slice(&[0u8; 32]).unwrap();
        let nonce = Nonce::from_slice(&[0u8; 12]);
        let ct = cipher.encrypt(nonce, Payload { msg: &[], aad: &[] }).unwrap();
        assert_eq!(ct, hex("530f8afbc74536b9a963b4f1c4cb738b"));
        let ct = cipher.encrypt(nonce, Payload { msg: &[0u8; 16], aad: &[] }).unwrap();
        assert_eq!(ct, hex("cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"));
    }

    #[pg_test]
    fn hkdf_info_separates_uses_versions_and_domains() {
        use keys::KeyUse::*;
        let a = keys::hkdf_info(Pseudonym, "analytics", 1);
        assert_eq!(a, b"pg_mseg/pseudonym/v1/analytics".to_vec());
        assert_ne!(a, keys::hkdf_info(Pseudonym, "analytics", 2));
        assert_ne!(a, keys::hkdf_info(TokenEncryption, "analytics", 1));
        assert_ne!(a, keys::hkdf_info(Pseudonym, "analytics2", 1));
    }

    // ---- pseudonyms ------------------------------------------------------------------------

    #[pg_test]
    fn pseudonym_is_deterministic_compact_and_domain_separated() {
        setup_domains();
        let a1 = pseudonym::pseudonym_for_test("alice@example.com", "t_one").unwrap();
        let a2 = pseudonym::pseudonym_for_test("alice@example.com", "t_one").unwrap();
        let b = pseudonym::pseudonym_for_test("alice@example.com", "t_two").unwrap();
        let c = pseudonym::pseudonym_for_test("alice@example.co", "t_one").unwrap();
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        assert_ne!(a1, c);
        assert_eq!(a1.len(), pseudonym::PSEUDONYM_LEN);
        assert!(a1.bytes().all(|ch| ch.is_ascii_alphanumeric() || ch == b'-' || ch == b'_'));
        // SQL gives the same as Rust
        let sql = Spi::get_one::<String>("SELECT mseg.pseudonym('alice@example.com', 't_one')").unwrap().unwrap();
        assert_eq!(sql, a1);
    }

    #[pg_test]
    fn pseudonym_is_not_an_unkeyed_hash() {
        use sha2::{Digest, Sha256};
        setup_domains();
        let p = pseudonym::pseudonym_for_test("alice@example.com", "t_one").unwrap();
        let mut plain = [0u8; 43];
        let digest: [u8; 32] = Sha256::digest(b"alice@example.com").into();
        pseudonym::encode_tag(&digest, &mut plain);
        assert_ne!(p.as_bytes(), &plain[..]);
    }

    #[pg_test]
    fn pseudonym_of_null_is_null() {
        setup_domains();
        assert_eq!(Spi::get_one::<String>("SELECT mseg.pseudonym(NULL, 't_one')").unwrap(), None);
    }

    #[pg_test(error = "pseudonymisation domain \"no_such\" does not exist")]
    fn pseudonym_unknown_domain_errors() {
        Spi::run("SELECT mseg.pseudonym('x', 'no_such')").unwrap();
    }

    #[pg_test(error = "argument \"domain\" must not be NULL")]
    fn pseudonym_null_domain_errors() {
        Spi::run("SELECT mseg.pseudonym('x', NULL)").unwrap();
    }

    #[pg_test]
    fn rotation_changes_pseudonyms() {
        setup_domains();
        let before = Spi::get_one::<String>("SELECT mseg.pseudonym('v', 't_one')").unwrap().unwrap();
        let v = Spi::get_one::<i32>("SELECT mseg.rotate_domain('t_one')").unwrap().unwrap();
        assert_eq!(v, 2);
        let after = Spi::get_one::<String>("SELECT mseg.pseudonym('v', 't_one')").unwrap().unwrap();
        assert_ne!(before, after);
    }

    // ---- tokens ----------------------------------------------------------------------------

    #[pg_test]
    fn token_roundtrip_is_deterministic() {
        setup_domains();
        let keys = keys::domain_keys("t_one").unwrap();
        let t1 = token::encrypt(&keys, "bob@example.com".as_bytes()).unwrap();
        let t2 = token::encrypt(&keys, "bob@example.com".as_bytes()).unwrap();
        assert_eq!(t1, t2);
        assert_ne!(t1, token::encrypt(&keys, "bob@example.org".as_bytes()).unwrap());
        assert_eq!(token::detoken_str("t_one", &t1).unwrap(), "bob@example.com");
    }

    #[pg_test]
    fn token_from_another_domain_or_tampered_is_refused() {
        setup_domains();
        let keys = keys::domain_keys("t_one").unwrap();
        let t = token::encrypt(&keys, b"carol").unwrap();
        let err = token::detoken_str("t_two", &t).unwrap_err();
        assert_eq!(err.code.sqlstate(), "MS012");
        // flip one character in the ciphertext part
        let mut bytes = t.clone().into_bytes();
        let i = bytes.len() - 5;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(token::detoken_str("t_one", &tampered).unwrap_err().code.sqlstate(), "MS012");
        assert_eq!(token::detoken_str("t_one", "not*base64").unwrap_err().code.sqlstate(), "MS012");
        assert_eq!(token::detoken_str("t_one", "AQAB").unwrap_err().code.sqlstate(), "MS012");
    }

    #[pg_test]
    fn token_survives_rotation() {
        setup_domains();
        let old = Spi::get_one::<String>("SELECT mseg.token('dave', 't_one')").unwrap().unwrap();
        Spi::run("SELECT mseg.rotate_domain('t_one')").unwrap();
        let new = Spi::get_one::<String>("SELECT mseg.token('dave', 't_one')").unwrap().unwrap();
        assert_ne!(old, new);
        let back = Spi::get_one_with_args::<String>("SELECT mseg.detoken($1, 't_one')", &[old.as_str().into()]).unwrap();
        assert_eq!(back.as_deref(), Some("dave"));
    }

    // ---- pseudonym columns -----------------------------------------------------------------

    #[pg_test]
    fn pseudonym_column_follows_insert_update_and_forgery() {
        Spi::run(
            "CREATE TABLE t_cust(id int primary key, email text, n int);
             INSERT INTO t_cust SELECT g, 'u'||g||'@x.org', g FROM generate_series(1, 500) g;
             SELECT mseg.add_pseudonym_column('t_cust', 'email', 't_col');
             SELECT mseg.add_pseudonym_column('t_cust', 'n', 't_col', column_name => 'n_pn');
             INSERT INTO t_cust VALUES (501, 'new@x.org', 501), (502, NULL, NULL);
             UPDATE t_cust SET email = 'changed@x.org' WHERE id = 1;
             UPDATE t_cust SET email_pseudonym = 'forged' WHERE id = 2;",
        )
        .unwrap();
        let bad = Spi::get_one::<i64>(
            "SELECT count(*) FROM t_cust WHERE email_pseudonym IS DISTINCT FROM mseg.pseudonym(email, 't_col')
                OR n_pn IS DISTINCT FROM mseg.pseudonym(n::text, 't_col')",
        )
        .unwrap();
        assert_eq!(bad, Some(0));
        let nulls = Spi::get_one::<i64>("SELECT count(*) FROM t_cust WHERE email_pseudonym IS NULL").unwrap();
        assert_eq!(nulls, Some(1));
    }

    #[pg_test]
    fn rotation_rewrites_pseudonym_columns() {
        Spi::run(
            "CREATE TABLE t_rot(id int, email text);
             INSERT INTO t_rot SELECT g, 'u'||g FROM generate_series(1, 300) g;
             SELECT mseg.add_pseudonym_column('t_rot', 'email', 't_rot');
             CREATE TEMP TABLE before AS SELECT id, email_pseudonym FROM t_rot;
             SELECT mseg.rotate_domain('t_rot');",
        )
        .unwrap();
        let same =
            Spi::get_one::<i64>("SELECT count(*) FROM t_rot JOIN before USING (id) WHERE t_rot.email_pseudonym = before.email_pseudonym")
                .unwrap();
        assert_eq!(same, Some(0));
        let bad = Spi::get_one::<i64>("SELECT count(*) FROM t_rot WHERE email_pseudonym IS DISTINCT FROM mseg.pseudonym(email, 't_rot')")
            .unwrap();
        assert_eq!(bad, Some(0));
    }

    #[pg_test]
    fn drop_pseudonym_column_removes_column_and_trigger() {
        Spi::run(
            "CREATE TABLE t_drop(id int, email text);
             SELECT mseg.add_pseudonym_column('t_drop', 'email', 't_drop');
             SELECT mseg.drop_pseudonym_column('t_drop', 'email_pseudonym');",
        )
        .unwrap();
        let triggers = Spi::get_one::<i64>("SELECT count(*) FROM pg_trigger WHERE tgrelid = 't_drop'::regclass").unwrap();
        assert_eq!(triggers, Some(0));
        let cols = Spi::get_one::<i64>("SELECT count(*) FROM mseg.pseudonym_columns WHERE relid = 't_drop'::regclass").unwrap();
        assert_eq!(cols, Some(0));
    }

    #[pg_test]
    fn trigger_refuses_unconfigured_table() {
        Spi::run(
            "CREATE TABLE t_rogue(email text, p text);
                  CREATE TRIGGER rogue BEFORE INSERT ON t_rogue FOR EACH ROW EXECUTE FUNCTION mseg.pseudonym_trigger();",
        )
        .unwrap();
        let r = PgTryBuilder::new(|| Spi::run("INSERT INTO t_rogue VALUES ('x', NULL)").map(|_| true).unwrap_or(false))
            .catch_others(|_| false)
            .execute();
        assert!(!r, "the trigger must refuse a table it was not configured for");
    }

    #[pg_test]
    fn key_fingerprint_is_stable_and_short() {
        let a = Spi::get_one::<String>("SELECT mseg.key_fingerprint()").unwrap().unwrap();
        let b = Spi::get_one::<String>("SELECT mseg.key_fingerprint()").unwrap().unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("mseg1:") && a.len() == 22);
    }

    // ---- row-only predicates evaluated in-process ------------------------------------------

    /// Store (n, city) into the virtual slot `slot` of table t_rp (id int8, n int4, city text).
    unsafe fn store_rp(slot: *mut pg_sys::TupleTableSlot, n: Option<i32>, city: Option<&str>) {
        ((*(*slot).tts_ops).clear.unwrap())(slot);
        let values = (*slot).tts_values;
        let nulls = (*slot).tts_isnull;
        *values.add(0) = 1i64.into_datum().unwrap();
        *nulls.add(0) = false;
        *nulls.add(1) = n.is_none();
        if let Some(n) = n {
            *values.add(1) = n.into_datum().unwrap();
        }
        *nulls.add(2) = city.is_none();
        if let Some(c) = city {
            *values.add(2) = c.into_datum().unwrap();
        }
        pg_sys::ExecStoreVirtualTuple(slot);
    }

    #[pg_test]
    fn row_predicates_compile_evaluate_and_refuse() {
        use crate::row_predicates::RowPredicates;
        Spi::run("CREATE TABLE public.t_rp (id int8, n int4, city text)").unwrap();
        let relid = Spi::get_one::<pg_sys::Oid>("SELECT 'public.t_rp'::regclass::oid").unwrap().unwrap();
        unsafe {
            let rel = pg_sys::relation_open(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            let desc = (*rel).rd_att;
            let predicates = [
                Some("(s.n >= 10)"),
                Some("(s.city = ANY (ARRAY['Berlin'::text, 'Köln'::text]))"),
                Some("(EXISTS (SELECT 1 FROM public.t_rp x WHERE x.id = s.id))"),
                None,
                Some("(s.n > 'not a number')"),
                Some("(s.n)"),
            ];
            let rp = RowPredicates::compile("public.t_rp", desc, &predicates).unwrap();
            // compiled: plain expressions; not: subqueries, nothing given, errors, non-boolean
            let compiled: Vec<bool> = (0..predicates.len()).map(|i| rp.is_compiled(i)).collect();
            assert_eq!(compiled, vec![true, true, false, false, false, false]);
            assert!(rp.fits(desc));
            let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsVirtual);
            store_rp(slot, Some(12), Some("Köln"));
            assert_eq!((rp.holds(0, slot), rp.holds(1, slot), rp.holds(2, slot)), (Some(true), Some(true), None));
            rp.reset();
            store_rp(slot, Some(9), Some("Hamburg"));
            assert_eq!((rp.holds(0, slot), rp.holds(1, slot)), (Some(false), Some(false)));
            // NULL is not true: not a member, as in the SQL evaluation
            store_rp(slot, None, None);
            assert_eq!((rp.holds(0, slot), rp.holds(1, slot)), (Some(false), Some(false)));
            rp.reset();
            pg_sys::ExecDropSingleTupleTableSlot(slot);
            pg_sys::relation_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            // a changed column type: the compiled expressions no longer fit the descriptor
            Spi::run("ALTER TABLE public.t_rp ALTER COLUMN n TYPE int8").unwrap();
            let rel = pg_sys::relation_open(relid, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            assert!(!rp.fits((*rel).rd_att));
            pg_sys::relation_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        }
    }

    #[pg_test]
    fn bulk_predicates_rewrite_key_correlated_subqueries_only() {
        use crate::bulk_predicates::compile;
        Spi::run("CREATE TABLE public.t_bs (id int8 PRIMARY KEY, n int4)").unwrap();
        Spi::run("CREATE TABLE public.t_bo (id serial, sid int4, kind text, qty int4)").unwrap();
        let relid = Spi::get_one::<pg_sys::Oid>("SELECT 'public.t_bs'::regclass::oid").unwrap().unwrap();
        let exists_a = "EXISTS (SELECT 1 FROM public.t_bo o WHERE o.sid = s.id AND o.kind = 'a')";
        let predicates = [
            Some(exists_a.to_owned()),
            Some("(SELECT count(*) FROM public.t_bo o WHERE o.sid = s.id) > 2".to_owned()),
            Some("(SELECT sum(o.qty) FROM ONLY public.t_bo o WHERE s.id = o.sid AND o.qty > 1) > 5".to_owned()),
            // not rewritten: another outer reference, no correlation, no aggregate, two tables,
            // the key twice, a `$` in the text, no subquery at all
            Some("EXISTS (SELECT 1 FROM public.t_bo o WHERE o.sid = s.id AND o.qty > s.n)".to_owned()),
            Some("EXISTS (SELECT 1 FROM public.t_bo o WHERE o.kind = 'a')".to_owned()),
            Some("(SELECT o.qty FROM public.t_bo o WHERE o.sid = s.id LIMIT 1) > 1".to_owned()),
            Some("EXISTS (SELECT 1 FROM public.t_bo o, public.t_bo p WHERE o.sid = s.id)".to_owned()),
            Some("EXISTS (SELECT 1 FROM public.t_bo o WHERE o.sid = s.id AND o.id = s.id)".to_owned()),
            Some(format!("'$1000' = s.n::text OR {exists_a}")),
            Some("s.n > 1".to_owned()),
            None,
            // one part rewritten, the other stays correlated
            Some(format!("s.n > 1 AND {exists_a} AND (SELECT max(o.qty) FROM public.t_bo o WHERE o.sid = s.id AND o.qty > s.n) > 1")),
        ];
        let texts: Vec<Option<&str>> = predicates.iter().map(|p| p.as_deref()).collect();
        let forms = compile("public.t_bs", relid, 1, &texts).unwrap();
        let rewritten: Vec<bool> = forms.iter().map(|f| f.is_some()).collect();
        assert_eq!(rewritten, vec![true, true, true, false, false, false, false, false, false, false, false, true]);

        let exists = forms[0].as_ref().unwrap();
        assert_eq!(exists.values.len(), 1);
        assert_eq!((exists.values[0].relation.as_str(), exists.values[0].key.as_str()), ("public.t_bo", "sid"));
        assert_eq!(exists.values[0].column, "pg_catalog.bool_or((mseg_src.kind = 'a'::text))");
        assert!(exists.values[0].exists);
        assert_eq!(exists.render(|_| "V".to_owned()), "(V)");

        let count = forms[1].as_ref().unwrap();
        assert_eq!(count.values[0].column, "count(*)");
        assert!(!count.values[0].exists);
        assert_eq!(count.render(|_| "V".to_owned()), "((V) > 2)");

        let sum = forms[2].as_ref().unwrap();
        assert_eq!(sum.values[0].relation, "ONLY public.t_bo");
        assert_eq!(sum.values[0].column, "sum(mseg_src.qty) FILTER (WHERE (mseg_src.qty > 1))");

        let mixed = forms[11].as_ref().unwrap();
        assert_eq!(mixed.values.len(), 1);
        let sql = mixed.render(|_| "V".to_owned());
        assert!(sql.contains("(V)") && sql.contains("SELECT max(o.qty)"), "{sql}");
    }

    #[pg_test]
    fn segment_set_merge_and_difference() {
        let merged = Spi::get_one::<Vec<i32>>("SELECT mseg._segments_merge('{1,5,9}', '{5,7}', '{7,NULL,2}')").unwrap();
        assert_eq!(merged, Some(vec![1, 2, 7, 9]), "stored ids outside the scope kept, evaluated ids added, sorted");
        let merged = Spi::get_one::<Vec<i32>>("SELECT mseg._segments_merge(NULL, '{5}', '{NULL}')").unwrap();
        assert_eq!(merged, Some(vec![]));
        let minus = Spi::get_one::<Vec<i32>>("SELECT mseg._segments_minus('{1,2,3}', '{2,4}')").unwrap();
        assert_eq!(minus, Some(vec![1, 3]));
        let minus = Spi::get_one::<Vec<i32>>("SELECT mseg._segments_minus('{}', NULL)").unwrap();
        assert_eq!(minus, Some(vec![]));
    }
}
