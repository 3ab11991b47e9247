//! The one error type of pg_mseg and its conversion into a PostgreSQL `ereport(ERROR)`.
//!
//! Every product error carries a SQLSTATE of the extension's own class `MS` (class letters
//! I–Z are reserved for implementation-defined conditions), a message, a detail and a hint.
//! pgrx's `ErrorReport` only knows the standard SQLSTATEs, so the report is raised here,
//! at the function boundary, after every Rust value of the call has been dropped.

use std::ffi::CString;
use std::fmt;

/// Catalogue of SQLSTATEs; `docs/errors.md` lists the same table for DBAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// MS000: an error the other codes do not describe.
    General,
    /// MS001: `mseg.key_file` is not set.
    KeyFileNotConfigured,
    /// MS002: the key file cannot be opened or read.
    KeyFileUnreadable,
    /// MS003: the key file is readable by group or others, or is not a regular file.
    KeyFileInsecure,
    /// MS004: the key file holds fewer than 32 bytes.
    KeyFileTooShort,
    /// MS005: the library was not loaded through `shared_preload_libraries`.
    NotPreloaded,
    /// MS010: no such pseudonymisation domain.
    UnknownDomain,
    /// MS011: a domain name that breaks the naming rules, or one that already exists.
    InvalidDomain,
    /// MS012: a token that is malformed, tampered with, or from another domain or key.
    InvalidToken,
    /// MS020: a table or column that cannot carry what was asked of it.
    InvalidTable,
    /// MS021: the object asked for already exists.
    DuplicateObject,
    /// MS022: the object asked for does not exist.
    UndefinedObject,
    /// MS023: a NULL where a value is required, or an argument outside its range.
    InvalidArgument,
    /// MS030: the caller lacks the role or ownership the operation needs.
    InsufficientPrivilege,
    /// MS041: no such purpose.
    UnknownPurpose,
    /// MS045: no subject table registered, or an unsuitable one.
    SubjectTable,
    /// MS049: an erasure that cannot be done as asked.
    Erasure,
    /// MS050: a segment predicate that is not a safe, boolean, single expression.
    InvalidPredicate,
    /// MS051: no such segment.
    UnknownSegment,
    /// MS052: a source table still used by segments, or not suitable as a source.
    SourceInUse,
    /// MS060: a k-anonymity request that cannot be met as asked (hierarchy, level, k, columns).
    KAnonymity,
    /// MS070: no such partner.
    UnknownPartner,
    /// MS071: a Variant Twin dump that fails verification (signature, manifest, sequence, shape).
    InvalidDump,
    /// MS072: a dump from a controller that is not registered here.
    UnknownController,
    /// MS073: a dump (or one of its lines) beyond the import limits (size, line size, JSON depth).
    ImportLimit,
    /// MS075: an export from a restored, cloned or promoted copy of the database not yet accepted
    /// with `mseg.accept_copy()`, or from a standby.
    CopyNotAccepted,
    /// MS074: the dump's source cannot be read (a server file without pg_read_server_files, an
    /// unreadable file, a relation that is not a staging table).
    ImportSource,
    /// MS076: a linkage request, response or linkage file that fails verification (signature,
    /// format, sequence, shape), or a linkage step asked out of turn.
    InvalidLinkage,
    /// MS077: a delivery or response refused: a pool segment bound to another purpose, an
    /// invalid campaign or response name, an unknown campaign, a participant the campaign did not reach.
    Delivery,
    /// MS078: a rights notice file that fails verification (signature, format, sequence, addressee,
    /// shape), or a partner without a registered public key.
    InvalidNotice,
    /// MS079: participants not set up (no participant columns) or set up on unsuitable columns.
    Participants,
}

impl Code {
    pub fn sqlstate(self) -> &'static str {
        match self {
            Code::General => "MS000",
            Code::KeyFileNotConfigured => "MS001",
            Code::KeyFileUnreadable => "MS002",
            Code::KeyFileInsecure => "MS003",
            Code::KeyFileTooShort => "MS004",
            Code::NotPreloaded => "MS005",
            Code::UnknownDomain => "MS010",
            Code::InvalidDomain => "MS011",
            Code::InvalidToken => "MS012",
            Code::InvalidTable => "MS020",
            Code::DuplicateObject => "MS021",
            Code::UndefinedObject => "MS022",
            Code::InvalidArgument => "MS023",
            Code::InsufficientPrivilege => "MS030",
            Code::UnknownPurpose => "MS041",
            Code::SubjectTable => "MS045",
            Code::Erasure => "MS049",
            Code::InvalidPredicate => "MS050",
            Code::UnknownSegment => "MS051",
            Code::SourceInUse => "MS052",
            Code::KAnonymity => "MS060",
            Code::UnknownPartner => "MS070",
            Code::InvalidDump => "MS071",
            Code::UnknownController => "MS072",
            Code::ImportLimit => "MS073",
            Code::ImportSource => "MS074",
            Code::CopyNotAccepted => "MS075",
            Code::InvalidLinkage => "MS076",
            Code::Delivery => "MS077",
            Code::InvalidNotice => "MS078",
            Code::Participants => "MS079",
        }
    }
}

/// A product error: SQLSTATE, message, optional detail and hint.
#[derive(Debug, Clone)]
pub struct MsegError {
    pub code: Code,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, MsegError>;

impl MsegError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        MsegError { code, message: message.into(), detail: None, hint: None }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// An argument that must not be NULL was NULL.
    pub fn null_argument(name: &str) -> Self {
        MsegError::new(Code::InvalidArgument, format!("argument \"{name}\" must not be NULL")).hint(format!("Pass a value for \"{name}\"."))
    }
}

impl fmt::Display for MsegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.sqlstate(), self.message)
    }
}

impl std::error::Error for MsegError {}

/// SPI failures are internal (the SQL is ours); they keep their text, never a key.
impl From<pgrx::spi::Error> for MsegError {
    fn from(e: pgrx::spi::Error) -> Self {
        MsegError::new(Code::General, format!("internal query failed: {e}"))
    }
}

impl From<pgrx::datum::TryFromDatumError> for MsegError {
    fn from(e: pgrx::datum::TryFromDatumError) -> Self {
        MsegError::new(Code::General, format!("internal type conversion failed: {e}"))
    }
}

fn make_sqlstate(s: &str) -> i32 {
    // Same packing as PostgreSQL's MAKE_SQLSTATE macro.
    s.bytes().take(5).enumerate().fold(0i32, |acc, (i, ch)| acc + ((((ch as i32) - ('0' as i32)) & 0x3F) << (6 * i)))
}

#[allow(improper_ctypes)]
unsafe extern "C-unwind" {
    fn errstart(elevel: std::ffi::c_int, domain: *const std::ffi::c_char) -> bool;
    fn errcode(sqlerrcode: std::ffi::c_int) -> std::ffi::c_int;
    fn errmsg(fmt: *const std::ffi::c_char, ...) -> std::ffi::c_int;
    fn errdetail(fmt: *const std::ffi::c_char, ...) -> std::ffi::c_int;
    fn errhint(fmt: *const std::ffi::c_char, ...) -> std::ffi::c_int;
    fn errfinish(filename: *const std::ffi::c_char, lineno: std::ffi::c_int, funcname: *const std::ffi::c_char);
}

/// Copy a Rust string into the current PostgreSQL memory context, dropping interior NULs.
fn pg_cstring(s: &str) -> *mut std::ffi::c_char {
    let c = CString::new(s.replace('\0', "")).unwrap_or_default();
    // SAFETY: pstrdup copies the bytes into palloc'd memory that PostgreSQL frees itself.
    unsafe { pgrx::pg_sys::pstrdup(c.as_ptr()) }
}

/// Raise `err` as a PostgreSQL ERROR. Only called by [`boundary`], whose frames hold nothing
/// that needs dropping when the error longjmps out of them.
#[inline(never)]
fn raise(err: MsegError) -> ! {
    let code = make_sqlstate(err.code.sqlstate());
    let msg = pg_cstring(&err.message);
    let detail = err.detail.as_deref().map(pg_cstring);
    let hint = err.hint.as_deref().map(pg_cstring);
    drop(err);
    // SAFETY: plain ereport sequence; all strings are palloc'd and nothing Rust-owned remains.
    unsafe {
        if errstart(pgrx::pg_sys::PGERROR as std::ffi::c_int, std::ptr::null()) {
            errcode(code);
            errmsg(c"%s".as_ptr(), msg);
            if let Some(d) = detail {
                errdetail(c"%s".as_ptr(), d);
            }
            if let Some(h) = hint {
                errhint(c"%s".as_ptr(), h);
            }
            errfinish(c"pg_mseg".as_ptr(), 0, c"pg_mseg".as_ptr());
        }
    }
    // errstart() returns true for ERROR, and errfinish() never returns for ERROR.
    std::process::abort()
}

/// Run the body of an SQL-callable function; a product error becomes an ereport.
///
/// The closure has returned (and dropped its locals) before the error is raised.
#[inline]
pub fn boundary<T>(body: impl FnOnce() -> Result<T>) -> T {
    match crate::gucs::ensure_preloaded().and_then(|()| body()) {
        Ok(v) => v,
        Err(e) => raise(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_packing_matches_postgres() {
        // ERRCODE_INTERNAL_ERROR is MAKE_SQLSTATE('X','X','0','0','0').
        assert_eq!(make_sqlstate("XX000"), pgrx::pg_sys::errcodes::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR as i32);
        assert_eq!(Code::KeyFileInsecure.sqlstate(), "MS003");
    }
}
