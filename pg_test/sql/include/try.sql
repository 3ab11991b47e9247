\set ECHO none
-- try(statement): run it and return its SQLSTATE, message, detail and hint ('ok' if it succeeded),
-- so a golden file shows every error a DBA would see. Included by the files that need it.
CREATE FUNCTION try(stmt text) RETURNS TABLE (sqlstate text, message text, detail text, hint text)
LANGUAGE plpgsql AS $$
DECLARE s text; m text; d text; h text;
BEGIN
    EXECUTE stmt;
    RETURN QUERY SELECT 'ok'::text, NULL::text, NULL::text, NULL::text;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS s = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    RETURN QUERY SELECT s, m, NULLIF(d, ''), NULLIF(h, '');
END $$;
GRANT EXECUTE ON FUNCTION try(text) TO PUBLIC;
\set ECHO all
