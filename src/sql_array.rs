//! Array parameters for SPI built in one call. pgrx turns a `Vec<T>` into an array element by
//! element (a datum per element, then `accumArrayResult`, each through a guarded FFI call, text
//! copied twice); the import's and the export's batches of 10 000 rows paid that for every value
//! (9 % of an import, issue 17). Here the elements are laid out in Rust and PostgreSQL builds the
//! array once with `construct_array_builtin`. jsonb values parsed once can be passed again as a
//! jsonb[] of their bytes (the import's records).

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;

/// An array of builtin type `elem` from its elements' datums, in the current memory context
/// (`construct_array_builtin` copies the elements; pgrx's conversion puts its arrays there too).
/// SAFETY: each datum is a valid value of `elem` (a by-reference one alive until this returns).
unsafe fn construct(mut elems: Vec<pg_sys::Datum>, elem: pg_sys::Oid) -> pg_sys::Datum {
    unsafe { pg_sys::Datum::from(pg_sys::construct_array_builtin(elems.as_mut_ptr(), elems.len() as i32, elem)) }
}

/// [`construct`] as an SPI parameter of array type `array`.
/// SAFETY: as [`construct`].
unsafe fn build(elems: Vec<pg_sys::Datum>, elem: pg_sys::Oid, array: pg_sys::Oid) -> DatumWithOid<'static> {
    unsafe { DatumWithOid::new(construct(elems, elem), array) }
}

/// An int8[] parameter.
pub fn int8(values: &[i64]) -> DatumWithOid<'static> {
    // SAFETY: int8 datums.
    unsafe { build(values.iter().map(|&v| pg_sys::Datum::from(v)).collect(), pg_sys::INT8OID, pg_sys::INT8ARRAYOID) }
}

/// An int4[] parameter.
pub fn int4(values: &[i32]) -> DatumWithOid<'static> {
    // SAFETY: an int4[] value.
    unsafe { DatumWithOid::new(int4_datum(values), pg_sys::INT4ARRAYOID) }
}

/// An int4[] value (a function's result, or [`int4`]'s parameter), in the current memory context.
pub fn int4_datum(values: &[i32]) -> pg_sys::Datum {
    // SAFETY: int4 datums.
    unsafe { construct(values.iter().map(|&v| pg_sys::Datum::from(v)).collect(), pg_sys::INT4OID) }
}

/// A text[] parameter (no NULL element) from `items`.
pub fn text<'a>(items: impl IntoIterator<Item = &'a str>) -> DatumWithOid<'static> {
    const HEADER: usize = 4;
    let items: Vec<&str> = items.into_iter().collect();
    // every element as a text value with a 4-byte varlena header, at 4-byte aligned offsets of
    // one buffer (u32 words keep it aligned); the datums point into it until the array is built
    let words: usize = items.iter().map(|s| (HEADER + s.len()).div_ceil(4)).sum();
    let mut buffer = vec![0u32; words];
    let base = buffer.as_mut_ptr().cast::<u8>();
    let mut elems = Vec::with_capacity(items.len());
    let mut offset = 0usize;
    for s in &items {
        // SAFETY: offset + HEADER + s.len() is within the buffer (sized above), offset is a
        // multiple of 4; set_varsize_4b writes the header of a text of that length.
        unsafe {
            let p = base.add(offset);
            pgrx::set_varsize_4b(p.cast::<pg_sys::varlena>(), (HEADER + s.len()) as i32);
            std::ptr::copy_nonoverlapping(s.as_ptr(), p.add(HEADER), s.len());
            elems.push(pg_sys::Datum::from(p));
        }
        offset += (HEADER + s.len()).div_ceil(4) * 4;
    }
    // SAFETY: every datum points to a text value inside `buffer`, alive until the array is built.
    unsafe { build(elems, pg_sys::TEXTOID, pg_sys::TEXTARRAYOID) }
}

/// A jsonb[] parameter from jsonb datums (already parsed: their bytes are copied, not parsed).
///
/// # Safety
/// Every datum is a jsonb value alive until this returns.
pub unsafe fn jsonb(values: &[pg_sys::Datum]) -> DatumWithOid<'static> {
    let mut elems = values.to_vec();
    // SAFETY: jsonb datums (the caller's promise); jsonb is a varlena aligned like int4.
    unsafe {
        let a = pg_sys::construct_array(
            elems.as_mut_ptr(),
            elems.len() as i32,
            pg_sys::JSONBOID,
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
        );
        DatumWithOid::new(pg_sys::Datum::from(a), pg_sys::JSONBARRAYOID)
    }
}

/// The elements of the jsonb[] `array`, copied into the current memory context once (the datums
/// point into that copy and live as long as the context).
///
/// # Safety
/// `array` is a jsonb[] datum without NULL elements.
pub unsafe fn jsonb_elements(array: pg_sys::Datum) -> Vec<pg_sys::Datum> {
    // SAFETY: the caller's promise; the copy is a flat array in the current context.
    unsafe {
        let copy = pg_sys::pg_detoast_datum_copy(array.cast_mut_ptr::<pg_sys::varlena>()).cast::<pg_sys::ArrayType>();
        let (mut elems, mut nulls, mut n) = (std::ptr::null_mut(), std::ptr::null_mut(), 0);
        pg_sys::deconstruct_array(
            copy,
            pg_sys::JSONBOID,
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
            &mut elems,
            &mut nulls,
            &mut n,
        );
        if n == 0 || elems.is_null() {
            return Vec::new();
        }
        std::slice::from_raw_parts(elems, n as usize).to_vec()
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn arrays_built_at_once_equal_pgrx_arrays() {
        let texts = ["", "a", "ab", "abc", "abcd", "München \"quoted\" \\ {,}", &"x".repeat(300)];
        let same = Spi::connect(|c| {
            let t = c.select(
                "SELECT $1::text[] = $2::text[] AND $3::int8[] = $4::int8[] AND $5::int4[] = $6::int4[] \
                 AND pg_catalog.array_length($1, 1) = 7 AND pg_catalog.cardinality($7::text[]) = 0",
                None,
                &[
                    super::text(texts.iter().copied()),
                    texts.to_vec().into(),
                    super::int8(&[i64::MIN, -1, 0, 1, i64::MAX]),
                    vec![i64::MIN, -1, 0, 1, i64::MAX].into(),
                    super::int4(&[i32::MIN, 0, 7, i32::MAX]),
                    vec![i32::MIN, 0, 7, i32::MAX].into(),
                    super::text(std::iter::empty()),
                ],
            )?;
            t.first().get_one::<bool>()
        })
        .unwrap();
        assert_eq!(same, Some(true));
    }
}
