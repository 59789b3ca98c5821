//! The `.vms` script language: lexing, parsing (with line:column errors) and the
//! interpreter that runs each statement as a Win32 call. See `docs/script.md`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;

use virtmem::{
    AllocationType, Error, FreeType, MemoryBasicInformation, Protection, SimSpace, VirtualSpace, WriteWatchFlags,
};

use virtmem::trace::{self, Call as TCall, Out, Record, TraceWriter};

use crate::names::{self, describe, error_code_of, human, FlagKind};

// ----- Errors --------------------------------------------------------------------------

/// A script error at a line and column (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.msg)
    }
}

fn serr(line: usize, col: usize, msg: impl Into<String>) -> ScriptError {
    ScriptError { line, col, msg: msg.into() }
}

// ----- Lexer ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(u64),
    Str(Vec<u8>),
    Sym(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    col: usize,
}

fn lex(text: &str, line: usize) -> Result<Vec<Token>, ScriptError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            break;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            if i - start > MAX_WORD {
                return Err(serr(line, col, format!("a name may be at most {MAX_WORD} characters")));
            }
            out.push(Token { tok: Tok::Ident(chars[start..i].iter().collect()), col });
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            if i - start > MAX_WORD {
                return Err(serr(line, col, format!("a number may be at most {MAX_WORD} characters")));
            }
            let word: String = chars[start..i].iter().collect();
            out.push(Token { tok: Tok::Num(number(&word).map_err(|m| serr(line, col, m))?), col });
        } else if c == '"' {
            i += 1;
            let mut bytes = Vec::new();
            loop {
                let Some(&d) = chars.get(i) else {
                    return Err(serr(line, col, "unterminated string (missing closing `\"`)"));
                };
                i += 1;
                match d {
                    '"' => break,
                    '\\' => {
                        let ecol = i;
                        let e = chars.get(i).copied();
                        i += 1;
                        match e {
                            Some('n') => bytes.push(b'\n'),
                            Some('t') => bytes.push(b'\t'),
                            Some('0') => bytes.push(0),
                            Some('\\') => bytes.push(b'\\'),
                            Some('"') => bytes.push(b'"'),
                            Some('x') => {
                                // Exactly two hex digits (`from_str_radix` alone also takes a sign).
                                let hex: String = chars
                                    .get(i..i + 2)
                                    .filter(|d| d.iter().all(char::is_ascii_hexdigit))
                                    .map(|d| d.iter().collect())
                                    .unwrap_or_default();
                                let v = u8::from_str_radix(&hex, 16)
                                    .map_err(|_| serr(line, ecol, "`\\x` needs two hex digits, like \\x41"))?;
                                bytes.push(v);
                                i += 2;
                            }
                            _ => return Err(serr(line, ecol, "unknown escape (use \\n \\t \\0 \\\\ \\\" or \\xNN)")),
                        }
                    }
                    d => {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(d.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            out.push(Token { tok: Tok::Str(bytes), col });
        } else if "=,|+-*()".contains(c) {
            out.push(Token { tok: Tok::Sym(c), col });
            i += 1;
        } else {
            return Err(serr(line, col, format!("unexpected character `{}`", crate::names::escaped(&c.to_string()))));
        }
    }
    Ok(out)
}

/// The longest name or number a script may hold, in characters: messages quote them,
/// and a name of megabytes would make a message of megabytes.
const MAX_WORD: usize = 256;

/// A number: decimal or `0x` hex, `_` separators, an optional binary-unit suffix
/// (`K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB`).
pub(crate) fn number(word: &str) -> Result<u64, String> {
    let lower = word.replace('_', "").to_ascii_lowercase();
    let (digits, radix) = match lower.strip_prefix("0x") {
        Some(h) => (h.to_string(), 16),
        None => (lower.clone(), 10),
    };
    let (digits, mult) = if radix == 10 {
        let split = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
        let (d, suffix) = digits.split_at(split);
        let mult: u64 = match suffix {
            "" => 1,
            "k" | "kib" | "kb" => 1 << 10,
            "m" | "mib" | "mb" => 1 << 20,
            "g" | "gib" | "gb" => 1 << 30,
            "t" | "tib" | "tb" => 1 << 40,
            _ => return Err(format!("`{word}` is not a number (suffixes: K, M, G, T)")),
        };
        (d.to_string(), mult)
    } else {
        (digits, 1)
    };
    if digits.is_empty() {
        return Err(format!("`{word}` is not a number"));
    }
    let v = u64::from_str_radix(&digits, radix).map_err(|_| format!("`{word}` is not a 64-bit number"))?;
    v.checked_mul(mult).ok_or_else(|| format!("`{word}` does not fit in 64 bits"))
}

// ----- Expressions -----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Expr {
    Num(u64),
    Var(String),
    Str(Vec<u8>),
    Ident(String),
    Neg(Box<Expr>),
    Bin(char, Box<Expr>, Box<Expr>),
}

impl Expr {
    /// The value of an expression that names no variable (wrapping as `eval` does); `None`
    /// when it depends on one, or is not a number.
    fn constant(&self) -> Option<u64> {
        Some(match self {
            Expr::Num(n) => *n,
            Expr::Var(_) | Expr::Ident(_) | Expr::Str(_) => return None,
            Expr::Neg(x) => x.constant()?.wrapping_neg(),
            Expr::Bin(op, a, b) => {
                let (a, b) = (a.constant()?, b.constant()?);
                match op {
                    '+' => a.wrapping_add(b),
                    '-' => a.wrapping_sub(b),
                    '*' => a.wrapping_mul(b),
                    _ => a | b,
                }
            }
        })
    }
}

/// What is wrong with `v` as argument `index` (0-based) of `cmd`, whose kind is `kind`,
/// beyond its type: a length over its command's cap, a byte over 255, a process number or
/// flags wider than 32 bits. Checked when the script is parsed for arguments written as
/// constants, and when the line runs for the others.
fn out_of_range(cmd: Cmd, index: usize, kind: Param, v: u64) -> Option<String> {
    match (cmd, index, kind) {
        (_, _, Param::Flags(_)) if v > u64::from(u32::MAX) => Some("flags are 32-bit values".into()),
        (Cmd::Read, 1, _) if v > MAX_READ => Some(format!("read length {v:#x} is too large (at most 1 MiB)")),
        (Cmd::Exec, 1, _) if v > MAX_READ => Some(format!("exec length {v:#x} is too large (at most 1 MiB)")),
        (Cmd::Fill, 1, _) if v > MAX_FILL => Some(format!("fill length {v:#x} is too large (at most 256 MiB)")),
        (Cmd::Fill, 2, _) | (Cmd::Write, 1.., _) if v > 0xFF => Some(format!("{v:#x} is not a byte (0 to 255)")),
        (Cmd::Exit, 0, _) if v > u64::from(u32::MAX) => Some("a process number is at most 0xFFFFFFFF".into()),
        _ => None,
    }
}

#[derive(Debug, Clone)]
struct Arg {
    expr: Expr,
    col: usize,
}

struct Parser<'a> {
    toks: &'a [Token],
    pos: usize,
    line: usize,
    end_col: usize,
    depth: usize,
    /// Binary operators parsed so far on this line.
    ops: usize,
}

/// Deepest expression nesting accepted, the expression itself counted: parentheses and
/// unary `-` at most `MAX_DEPTH - 1` deep (keeps the recursive parser's stack small).
const MAX_DEPTH: usize = 64;

/// Most binary operators accepted on one line. Expression trees are walked recursively
/// (resolving names, evaluating, dropping), so a flat chain of operators is as deep as it
/// is long: this cap keeps every walk's stack small, as `MAX_DEPTH` does for parentheses.
const MAX_OPERATORS: usize = 1000;

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }
    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end_col, |t| t.col)
    }
    fn err(&self, msg: impl Into<String>) -> ScriptError {
        serr(self.line, self.col(), msg)
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Sym(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    /// Eat the binary operator `c` if it is next, counting it against `MAX_OPERATORS`.
    fn binop(&mut self, c: char) -> Result<bool, ScriptError> {
        if self.peek() != Some(&Tok::Sym(c)) {
            return Ok(false);
        }
        if self.ops >= MAX_OPERATORS {
            return Err(self.err(format!("more than {MAX_OPERATORS} operators on one line")));
        }
        self.ops += 1;
        self.pos += 1;
        Ok(true)
    }
    fn expr(&mut self) -> Result<Expr, ScriptError> {
        let mut e = self.sum()?;
        while self.binop('|')? {
            e = Expr::Bin('|', Box::new(e), Box::new(self.sum()?));
        }
        Ok(e)
    }
    fn sum(&mut self) -> Result<Expr, ScriptError> {
        let mut e = self.product()?;
        loop {
            if self.binop('+')? {
                e = Expr::Bin('+', Box::new(e), Box::new(self.product()?));
            } else if self.binop('-')? {
                e = Expr::Bin('-', Box::new(e), Box::new(self.product()?));
            } else {
                return Ok(e);
            }
        }
    }
    fn product(&mut self) -> Result<Expr, ScriptError> {
        let mut e = self.unary()?;
        while self.binop('*')? {
            e = Expr::Bin('*', Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }
    fn unary(&mut self) -> Result<Expr, ScriptError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err(format!("parentheses and unary `-` nested deeper than {}", MAX_DEPTH - 1)));
        }
        self.depth += 1;
        let e = self.unary_inner();
        self.depth -= 1;
        e
    }
    fn unary_inner(&mut self) -> Result<Expr, ScriptError> {
        if self.eat('-') {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        let what = match self.peek() {
            Some(Tok::Num(n)) => Expr::Num(*n),
            Some(Tok::Ident(s)) => Expr::Ident(s.clone()),
            Some(Tok::Str(b)) => Expr::Str(b.clone()),
            Some(Tok::Sym('(')) => {
                self.pos += 1;
                let e = self.expr()?;
                if !self.eat(')') {
                    return Err(self.err("expected `)`"));
                }
                return Ok(e);
            }
            Some(Tok::Sym(c)) => return Err(self.err(format!("expected a value, found `{c}`"))),
            None => return Err(self.err("expected a value at the end of the line")),
        };
        self.pos += 1;
        Ok(what)
    }
    /// `arg, arg, ...` up to the end of the tokens.
    fn args(&mut self) -> Result<Vec<Arg>, ScriptError> {
        let mut out = Vec::new();
        if self.peek().is_none() {
            return Ok(out);
        }
        loop {
            let col = self.col();
            out.push(Arg { expr: self.expr()?, col });
            if self.peek().is_none() {
                return Ok(out);
            }
            if !self.eat(',') {
                return Err(self.err("expected `,` between arguments"));
            }
        }
    }
}

// ----- Statements ------------------------------------------------------------------------

/// The commands of the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Alloc,
    Free,
    Query,
    Protect,
    Read,
    Write,
    Fill,
    Exec,
    Reset,
    ResetUndo,
    GetWriteWatch,
    ResetWriteWatch,
    Lock,
    Unlock,
    Map,
    Stats,
    SysInfo,
    Process,
    Exit,
    Echo,
    Expect,
    CommitLimit,
}

const COMMANDS: &[(&str, Cmd)] = &[
    ("alloc", Cmd::Alloc),
    ("virtualalloc", Cmd::Alloc),
    ("virtualallocex", Cmd::Alloc),
    ("free", Cmd::Free),
    ("virtualfree", Cmd::Free),
    ("virtualfreeex", Cmd::Free),
    ("query", Cmd::Query),
    ("virtualquery", Cmd::Query),
    ("virtualqueryex", Cmd::Query),
    ("protect", Cmd::Protect),
    ("virtualprotect", Cmd::Protect),
    ("virtualprotectex", Cmd::Protect),
    ("read", Cmd::Read),
    ("write", Cmd::Write),
    ("fill", Cmd::Fill),
    ("exec", Cmd::Exec),
    ("reset", Cmd::Reset),
    ("reset_undo", Cmd::ResetUndo),
    ("getwritewatch", Cmd::GetWriteWatch),
    ("resetwritewatch", Cmd::ResetWriteWatch),
    ("lock", Cmd::Lock),
    ("virtuallock", Cmd::Lock),
    ("unlock", Cmd::Unlock),
    ("virtualunlock", Cmd::Unlock),
    ("map", Cmd::Map),
    ("stats", Cmd::Stats),
    ("sysinfo", Cmd::SysInfo),
    ("process", Cmd::Process),
    ("exit", Cmd::Exit),
    ("echo", Cmd::Echo),
    ("expect", Cmd::Expect),
    ("commitlimit", Cmd::CommitLimit),
];

/// What a parameter accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    Num,
    Flags(FlagKind),
    Data,
}

impl Cmd {
    /// (required, optional) parameters; `Data` as the last required one is variadic.
    fn params(self) -> (&'static [Param], &'static [Param]) {
        use Param::*;
        match self {
            Cmd::Alloc => (&[Num, Num, Flags(FlagKind::Alloc), Flags(FlagKind::Protect)], &[]),
            Cmd::Free => (&[Num, Num, Flags(FlagKind::Free)], &[]),
            Cmd::Query => (&[Num], &[]),
            Cmd::Protect => (&[Num, Num, Flags(FlagKind::Protect)], &[]),
            Cmd::Read => (&[Num, Num], &[]),
            Cmd::Write => (&[Num, Data], &[]),
            Cmd::Fill => (&[Num, Num, Num], &[]),
            Cmd::Exec => (&[Num], &[Num]),
            Cmd::Reset | Cmd::ResetUndo | Cmd::ResetWriteWatch | Cmd::Lock | Cmd::Unlock => (&[Num, Num], &[]),
            Cmd::GetWriteWatch => (&[Num, Num], &[Flags(FlagKind::WriteWatch), Num]),
            Cmd::Map | Cmd::Stats | Cmd::SysInfo => (&[], &[]),
            Cmd::Exit => (&[Num], &[]),
            Cmd::Echo => (&[], &[]),
            // Parsed specially.
            Cmd::Process | Cmd::Expect | Cmd::CommitLimit => (&[], &[]),
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Cmd::Alloc => "alloc ADDRESS, SIZE, TYPE, PROTECT",
            Cmd::Free => "free ADDRESS, SIZE, FREE_TYPE",
            Cmd::Query => "query ADDRESS",
            Cmd::Protect => "protect ADDRESS, SIZE, PROTECT",
            Cmd::Read => "read ADDRESS, LENGTH",
            Cmd::Write => "write ADDRESS, DATA... (strings or byte values)",
            Cmd::Fill => "fill ADDRESS, LENGTH, BYTE",
            Cmd::Exec => "exec ADDRESS [, LENGTH]",
            Cmd::Reset => "reset ADDRESS, SIZE",
            Cmd::ResetUndo => "reset_undo ADDRESS, SIZE",
            Cmd::GetWriteWatch => "getwritewatch BASE, SIZE [, reset [, MAX_COUNT]]",
            Cmd::ResetWriteWatch => "resetwritewatch BASE, SIZE",
            Cmd::Lock => "lock ADDRESS, SIZE",
            Cmd::Unlock => "unlock ADDRESS, SIZE",
            Cmd::Map => "map",
            Cmd::Stats => "stats",
            Cmd::SysInfo => "sysinfo",
            Cmd::Process => "process N | process null | process off",
            Cmd::Exit => "exit PROCESS",
            Cmd::Echo => "echo VALUE...",
            Cmd::Expect => "expect ok | expect ERROR_NAME | expect CODE",
            Cmd::CommitLimit => "commitlimit SIZE | commitlimit none",
        }
    }

    fn has_value(self) -> bool {
        matches!(self, Cmd::Alloc | Cmd::Free | Cmd::Query | Cmd::Protect | Cmd::Read | Cmd::GetWriteWatch | Cmd::Exec)
    }
}

/// Which process a `process` statement selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Select {
    Off,
    Null,
    Id(u32),
}

/// What `expect` wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Ok,
    Code(u32),
}

#[derive(Debug, Clone)]
enum Body {
    Call { cmd: Cmd, args: Vec<Arg> },
    Process(Select),
    Expect(Want),
    CommitLimit(Option<Arg>),
}

/// One parsed statement.
#[derive(Debug, Clone)]
pub struct Stmt {
    line: usize,
    assign: Option<String>,
    body: Body,
}

impl Stmt {
    /// The variable the statement assigns, if any.
    pub fn assigned(&self) -> Option<&str> {
        self.assign.as_deref()
    }
}

/// Parses statements one line at a time, tracking which variables exist so that an
/// unknown name is reported where it is written.
#[derive(Debug, Default)]
pub struct Compiler {
    vars: std::collections::HashSet<String>,
}

const CONSTANTS: &[(&str, u64)] =
    &[("NULL", 0), ("null", 0), ("PAGE", 0x1000), ("GRANULE", 0x1_0000), ("SIZE_MAX", u64::MAX)];

impl Compiler {
    /// Forget the variable `name`: later lines naming it are errors again. The prompt
    /// calls it when the line that would have assigned it failed to run, so that the
    /// variable is not left declared without a value.
    pub fn forget(&mut self, name: &str) {
        self.vars.remove(name);
    }

    /// Parse one line (`Ok(None)` for a blank or comment line).
    pub fn line(&mut self, text: &str, line: usize) -> Result<Option<Stmt>, ScriptError> {
        let toks = lex(text, line)?;
        if toks.is_empty() {
            return Ok(None);
        }
        let end_col = text.chars().count() + 1;
        let mut p = Parser { toks: &toks, pos: 0, line, end_col, depth: 0, ops: 0 };
        let mut assign = None;
        if let (Some(Tok::Ident(name)), Some(Tok::Sym('='))) =
            (toks.first().map(|t| &t.tok), toks.get(1).map(|t| &t.tok))
        {
            if CONSTANTS.iter().any(|(c, _)| c == name) || lookup_cmd(name).is_some() {
                return Err(serr(line, 1, format!("`{name}` is a reserved word and cannot be assigned")));
            }
            // Where a flag is expected a flag word wins, so a variable named like one
            // could never be read there: refuse the name.
            let kinds = [FlagKind::Alloc, FlagKind::Free, FlagKind::Protect, FlagKind::WriteWatch];
            if kinds.iter().any(|k| k.lookup(name).is_some()) {
                return Err(serr(
                    line,
                    1,
                    format!("`{name}` is a flag word (read as the flag where a flag is expected) and cannot be a variable name"),
                ));
            }
            assign = Some(name.clone());
            p.pos = 2;
        }
        let cmd_col = p.col();
        let name = match p.peek() {
            Some(Tok::Ident(n)) => n.clone(),
            Some(_) => return Err(p.err("expected a command such as alloc, free, query, protect, read, write, map")),
            None => return Err(p.err("expected a command after `=`")),
        };
        let cmd = lookup_cmd(&name)
            .ok_or_else(|| serr(line, cmd_col, format!("unknown command `{name}` (commands: {})", command_list())))?;
        p.pos += 1;
        if assign.is_some() && !cmd.has_value() {
            return Err(serr(line, cmd_col, format!("`{name}` has no value to assign")));
        }
        // Optional parentheses around the whole argument list: `alloc(0, 4K, commit, rw)`.
        // `arglist` takes them off for the commands with ordinary arguments; the commands
        // parsed specially read what is inside them.
        let mut inner = parenthesised(&p);
        let q = inner.as_mut().unwrap_or(&mut p);
        let body = match cmd {
            Cmd::Process => Body::Process(self.select(q)?),
            Cmd::Expect => Body::Expect(self.want(q)?),
            Cmd::CommitLimit => {
                if let Some(Tok::Ident(w)) = q.peek() {
                    if w.eq_ignore_ascii_case("none") && q.toks.len() == q.pos + 1 {
                        Body::CommitLimit(None)
                    } else {
                        Body::CommitLimit(Some(self.one_num(q, cmd)?))
                    }
                } else {
                    Body::CommitLimit(Some(self.one_num(q, cmd)?))
                }
            }
            _ => {
                let args = self.arglist(&mut p)?;
                let args = self.check(cmd, args, line, end_col)?;
                Body::Call { cmd, args }
            }
        };
        if let Some(n) = &assign {
            self.vars.insert(n.clone());
        }
        Ok(Some(Stmt { line, assign, body }))
    }

    fn arglist(&self, p: &mut Parser<'_>) -> Result<Vec<Arg>, ScriptError> {
        if p.peek() == Some(&Tok::Sym('(')) {
            let save = p.pos;
            p.pos += 1;
            let inner_end = p.toks.len().saturating_sub(1);
            if p.toks.last().map(|t| &t.tok) == Some(&Tok::Sym(')')) && inner_end >= p.pos {
                let mut q = Parser {
                    toks: &p.toks[..inner_end],
                    pos: p.pos,
                    line: p.line,
                    end_col: p.toks[inner_end].col,
                    depth: 0,
                    ops: 0,
                };
                if let Ok(args) = q.args() {
                    if q.pos == inner_end {
                        p.pos = p.toks.len();
                        return Ok(args);
                    }
                }
            }
            p.pos = save;
            // Not an argument list: `(` opens the first argument's expression. When that
            // reading fails too and the group is closed before the end of the line, what
            // follows its `)` is the mistake (`alloc(0, 4K, commit, rw) extra`), not the
            // first comma inside it, where the expression reading stops.
            let args = p.args();
            if args.is_err() {
                if let Some(after) = after_group(p.toks, save) {
                    let what = match &after.tok {
                        Tok::Ident(name) => format!("`{name}`"),
                        Tok::Sym(c) => format!("`{c}`"),
                        Tok::Num(_) => "number".to_string(),
                        Tok::Str(_) => "string".to_string(),
                    };
                    return Err(serr(
                        p.line,
                        after.col,
                        format!(
                            "unexpected {what} after the parenthesised argument list (the line must end at its `)`)"
                        ),
                    ));
                }
            }
            return args;
        }
        p.args()
    }

    fn one_num(&self, p: &mut Parser<'_>, cmd: Cmd) -> Result<Arg, ScriptError> {
        let args = self.arglist(p)?;
        let mut args = self.check_kinds(cmd, args, &[Param::Num], p.line)?;
        if args.len() != 1 {
            return Err(serr(p.line, p.end_col, format!("usage: {}", cmd.usage())));
        }
        Ok(args.remove(0))
    }

    fn select(&self, p: &mut Parser<'_>) -> Result<Select, ScriptError> {
        let col = p.col();
        let s = match p.peek() {
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("off") || w.eq_ignore_ascii_case("plain") => Select::Off,
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("null") => Select::Null,
            Some(Tok::Num(n)) => {
                Select::Id(u32::try_from(*n).map_err(|_| serr(p.line, col, "process ids are 0 to 4294967295"))?)
            }
            _ => return Err(serr(p.line, col, format!("usage: {}", Cmd::Process.usage()))),
        };
        p.pos += 1;
        if p.peek().is_some() {
            return Err(p.err("unexpected text after the process"));
        }
        Ok(s)
    }

    fn want(&self, p: &mut Parser<'_>) -> Result<Want, ScriptError> {
        let col = p.col();
        let w = match p.peek() {
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("ok") || w.eq_ignore_ascii_case("success") => Want::Ok,
            Some(Tok::Ident(w)) => {
                Want::Code(error_code_of(w).ok_or_else(|| serr(p.line, col, format!("unknown error name `{w}`")))?)
            }
            Some(Tok::Num(n)) => {
                Want::Code(u32::try_from(*n).map_err(|_| serr(p.line, col, "error codes are 32-bit"))?)
            }
            _ => return Err(serr(p.line, col, format!("usage: {}", Cmd::Expect.usage()))),
        };
        p.pos += 1;
        if p.peek().is_some() {
            return Err(p.err("unexpected text after the expected outcome"));
        }
        // ERROR_SUCCESS (0) is the code of a call that succeeded.
        Ok(if w == Want::Code(0) { Want::Ok } else { w })
    }

    fn check(&self, cmd: Cmd, args: Vec<Arg>, line: usize, end_col: usize) -> Result<Vec<Arg>, ScriptError> {
        let (req, opt) = cmd.params();
        let variadic = cmd == Cmd::Echo || req.last() == Some(&Param::Data);
        if args.len() < req.len() {
            let col = args.last().map_or(end_col, |_| end_col);
            return Err(serr(
                line,
                col,
                format!(
                    "{} needs {} argument(s), found {} (usage: {})",
                    cmd_name(cmd),
                    req.len(),
                    args.len(),
                    cmd.usage()
                ),
            ));
        }
        if !variadic && args.len() > req.len() + opt.len() {
            let extra = &args[req.len() + opt.len()];
            return Err(serr(line, extra.col, format!("too many arguments (usage: {})", cmd.usage())));
        }
        let mut kinds: Vec<Param> = req.iter().chain(opt.iter()).copied().collect();
        while kinds.len() < args.len() {
            kinds.push(Param::Data);
        }
        self.check_kinds(cmd, args, &kinds, line)
    }

    fn check_kinds(&self, cmd: Cmd, args: Vec<Arg>, kinds: &[Param], line: usize) -> Result<Vec<Arg>, ScriptError> {
        args.into_iter()
            .zip(kinds)
            .enumerate()
            .map(|(i, (a, &k))| {
                let expr = self.resolve(a.expr, k, line, a.col)?;
                // A constant out of range is found now, before any line runs.
                if let Some(msg) = expr.constant().and_then(|v| out_of_range(cmd, i, k, v)) {
                    return Err(serr(line, a.col, msg));
                }
                Ok(Arg { expr, col: a.col })
            })
            .collect()
    }

    fn resolve(&self, e: Expr, kind: Param, line: usize, col: usize) -> Result<Expr, ScriptError> {
        Ok(match e {
            Expr::Ident(name) => {
                if let Param::Flags(fk) = kind {
                    if let Some(v) = fk.lookup(&name) {
                        return Ok(Expr::Num(v as u64));
                    }
                }
                if self.vars.contains(&name) {
                    Expr::Var(name)
                } else if let Some(&(_, v)) = CONSTANTS.iter().find(|(c, _)| *c == name) {
                    Expr::Num(v)
                } else if let Param::Flags(fk) = kind {
                    return Err(serr(
                        line,
                        col,
                        format!("unknown flag or variable `{name}` (flags: {})", fk.expected()),
                    ));
                } else {
                    return Err(serr(line, col, format!("unknown variable `{name}`")));
                }
            }
            Expr::Str(b) => {
                if kind != Param::Data {
                    return Err(serr(line, col, "a string is only allowed as data (write, echo)"));
                }
                Expr::Str(b)
            }
            Expr::Neg(x) => Expr::Neg(Box::new(self.resolve(*x, num_like(kind), line, col)?)),
            Expr::Bin(op, a, b) => Expr::Bin(
                op,
                Box::new(self.resolve(*a, num_like(kind), line, col)?),
                Box::new(self.resolve(*b, num_like(kind), line, col)?),
            ),
            other => other,
        })
    }
}

/// Inside an expression, strings are not allowed; flags stay flags.
fn num_like(kind: Param) -> Param {
    match kind {
        Param::Data => Param::Num,
        k => k,
    }
}

/// The token after the `)` that closes the group opened by the `(` at `open`, if the
/// group is closed and something follows it.
fn after_group(toks: &[Token], open: usize) -> Option<&Token> {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(open) {
        match t.tok {
            Tok::Sym('(') => depth += 1,
            Tok::Sym(')') => {
                depth -= 1;
                if depth == 0 {
                    return toks.get(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// When the rest of the line is one parenthesised group, `( ... )` with the `(` next and
/// its matching `)` last, a parser over what is inside it.
fn parenthesised<'t>(p: &Parser<'t>) -> Option<Parser<'t>> {
    if p.peek() != Some(&Tok::Sym('(')) {
        return None;
    }
    let last = p.toks.len().checked_sub(1)?;
    let mut depth = 0usize;
    for (i, t) in p.toks.iter().enumerate().skip(p.pos) {
        match t.tok {
            Tok::Sym('(') => depth += 1,
            Tok::Sym(')') => {
                depth -= 1;
                if depth == 0 {
                    let toks = &p.toks[..i];
                    return (i == last).then_some(Parser {
                        toks,
                        pos: p.pos + 1,
                        line: p.line,
                        end_col: t.col,
                        depth: 0,
                        ops: 0,
                    });
                }
            }
            _ => {}
        }
    }
    None
}

fn lookup_cmd(name: &str) -> Option<Cmd> {
    let lower = name.to_ascii_lowercase();
    COMMANDS.iter().find(|(n, _)| *n == lower).map(|&(_, c)| c)
}

fn cmd_name(cmd: Cmd) -> &'static str {
    COMMANDS.iter().find(|(_, c)| *c == cmd).map_or("?", |(n, _)| n)
}

fn command_list() -> String {
    COMMANDS.iter().map(|(n, _)| *n).filter(|n| !n.starts_with("virtual")).collect::<Vec<_>>().join(", ")
}

/// Parse a whole script; the first error stops parsing.
pub fn parse(text: &str) -> Result<Vec<Stmt>, ScriptError> {
    let mut c = Compiler::default();
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if let Some(s) = c.line(l, i + 1)? {
            out.push(s);
        }
    }
    Ok(out)
}

// ----- Interpreter -------------------------------------------------------------------------

/// The outcome of the last call, for `expect`.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    None,
    Ok,
    Err(u32),
}

struct Proc {
    space: Box<dyn VirtualSpace>,
    exited: bool,
}

/// A running script: its processes, variables and output.
pub struct Session {
    procs: BTreeMap<u32, Proc>,
    select: Select,
    vars: HashMap<String, u64>,
    last: Outcome,
    out: Box<dyn Write>,
    /// Failed `expect`s.
    pub failed_expectations: usize,
    /// The failed `expect`s not yet taken by [`Session::take_misses`]: (line, what was
    /// expected and what happened).
    misses: Vec<(usize, String)>,
    /// The name of process 0's space ("simulated" or "this Linux process").
    kind0: &'static str,
    /// Where every Win32 call is recorded, if anywhere.
    trace: Option<TraceWriter>,
}

/// The pointer `--trace` records for a call's buffer or first out-pointer (the
/// `VirtualQuery` buffer, `lpflOldProtect`, `GetWriteWatch`'s `lpAddresses`, the
/// `ReadProcessMemory` / `WriteProcessMemory` / `VirtmemAccess` buffer). Those buffers are the CLI's own
/// memory, not the space traced, and ASLR moves them from run to run: a fixed stand-in
/// keeps a recording reproducible. It lies in the first 64 KiB, where no reservation can
/// be, and is not NULL, which is all a replay looks at (docs/script.md, "Traces").
const TRACE_OUT: usize = 0x1000;
/// The stand-in `--trace` records for a second out-pointer (`GetWriteWatch`'s
/// `lpdwGranularity`, `VirtmemAccess`'s `faultAddress`).
const TRACE_OUT_2: usize = 0x1008;

/// Largest `read` shown and largest `fill`.
const MAX_READ: u64 = 1 << 20;
const MAX_FILL: u64 = 256 << 20;

impl Session {
    /// A session whose current process (0) is `space`.
    pub fn new(space: Box<dyn VirtualSpace>, kind0: &'static str, out: Box<dyn Write>) -> Session {
        let mut procs = BTreeMap::new();
        procs.insert(0, Proc { space, exited: false });
        Session {
            procs,
            select: Select::Off,
            vars: HashMap::new(),
            last: Outcome::None,
            out,
            failed_expectations: 0,
            misses: Vec::new(),
            kind0,
            trace: None,
        }
    }

    /// The `expect`s that failed since the last call, as (line, what was expected and
    /// what happened).
    pub fn take_misses(&mut self) -> Vec<(usize, String)> {
        std::mem::take(&mut self.misses)
    }

    /// Record every Win32 call in `writer` (virtmem's trace format).
    pub fn set_trace(&mut self, writer: TraceWriter) {
        writer.header(&trace::Header::new(vec![("source".into(), "virtmem-run".into())]));
        self.trace = Some(writer);
    }

    /// Trace a call. A call with an `Ex` form (or `ReadProcessMemory` /
    /// `WriteProcessMemory` / `VirtmemAccess`) is recorded on the selected process, and
    /// not at all on a NULL handle, which the trace format cannot name; in plain mode the
    /// `Ex`-form calls are recorded in their plain form, and a call that always takes a
    /// process (a plain-mode access, as `VirtmemAccess`) on process 0, the current one. A
    /// call without an `Ex` form (`GetWriteWatch`, `ResetWriteWatch`, `VirtualLock`,
    /// `VirtualUnlock`) acts on process 0 whatever is selected, and is always recorded.
    fn rec<T>(&self, call: TCall, r: &Result<T, Error>, ok: impl FnOnce(&T) -> (u64, Out), fail: u64) {
        let Some(w) = &self.trace else { return };
        let process = if call.has_ex_form() || call.needs_process() {
            match self.select {
                Select::Off if call.needs_process() => Some(0),
                Select::Off => None,
                Select::Null => return,
                Select::Id(n) => Some(n),
            }
        } else {
            None
        };
        let (result, last_error, out) = match r {
            Ok(v) => {
                let (res, out) = ok(v);
                (res, 0, out)
            }
            Err(e) => (fail, e.code(), Out::None),
        };
        w.record(&Record { process, call, result, last_error, out });
    }

    /// Whether the variable `name` holds a value (a line assigning it has run).
    pub fn has_var(&self, name: &str) -> bool {
        self.vars.contains_key(name)
    }

    /// The current process's space (process 0).
    pub fn main_space(&self) -> &dyn VirtualSpace {
        &*self.procs[&0].space
    }

    fn eval(&self, e: &Expr) -> u64 {
        match e {
            Expr::Num(n) => *n,
            Expr::Var(v) => self.vars.get(v).copied().unwrap_or(0),
            Expr::Ident(_) | Expr::Str(_) => 0,
            Expr::Neg(x) => self.eval(x).wrapping_neg(),
            Expr::Bin(op, a, b) => {
                let (a, b) = (self.eval(a), self.eval(b));
                match op {
                    '+' => a.wrapping_add(b),
                    '-' => a.wrapping_sub(b),
                    '*' => a.wrapping_mul(b),
                    _ => a | b,
                }
            }
        }
    }

    fn num(&self, a: &Arg) -> usize {
        self.eval(&a.expr) as usize
    }

    fn flags(&self, a: &Arg, line: usize) -> Result<u32, ScriptError> {
        u32::try_from(self.eval(&a.expr)).map_err(|_| serr(line, a.col, "flags are 32-bit values"))
    }

    /// Run one statement. Output errors (a closed pipe) are ignored.
    pub fn exec(&mut self, s: &Stmt) -> Result<(), ScriptError> {
        let line = s.line;
        match &s.body {
            Body::Process(sel) => {
                self.select = *sel;
                match sel {
                    Select::Off => self.say("calls now use the plain forms (the current process)"),
                    Select::Null => self.say("Ex calls now pass a NULL process handle"),
                    Select::Id(0) => {
                        self.say(&format!("Ex calls now target process 0 (the current process, {})", self.kind0))
                    }
                    Select::Id(n) => {
                        let fresh = !self.procs.contains_key(n);
                        self.procs
                            .entry(*n)
                            .or_insert_with(|| Proc { space: Box::new(SimSpace::simulated()), exited: false });
                        let what = if fresh { "a new simulated process" } else { "a simulated process" };
                        self.say(&format!("Ex calls now target process {n} ({what})"))
                    }
                }
                Ok(())
            }
            Body::Expect(want) => {
                let ok = match (want, self.last) {
                    (Want::Ok, Outcome::Ok) => true,
                    (Want::Code(c), Outcome::Err(e)) => *c == e,
                    _ => false,
                };
                if !ok {
                    self.failed_expectations += 1;
                    let wanted = match want {
                        Want::Ok => "success".to_string(),
                        Want::Code(c) => outcome_text(*c),
                    };
                    let got = match self.last {
                        Outcome::None => "no call yet".to_string(),
                        Outcome::Ok => "success".to_string(),
                        Outcome::Err(c) => outcome_text(c),
                    };
                    let _ = writeln!(self.out, "!! line {line}: expected {wanted}, got {got}");
                    self.misses.push((line, format!("expected {wanted}, got {got}")));
                }
                Ok(())
            }
            Body::CommitLimit(arg) => {
                let limit = arg.as_ref().map(|a| self.num(a));
                self.main_space().set_commit_limit(limit);
                if let Some(w) = &self.trace {
                    let call = TCall::SetCommitLimit { limit: limit.unwrap_or(usize::MAX) };
                    w.record(&Record { process: None, call, result: 1, last_error: 0, out: Out::None });
                }
                match limit {
                    Some(l) => self.say(&format!("commit limit of process 0: {l:#x} ({})", human(l as u64))),
                    None => self.say("commit limit of process 0: none"),
                }
                Ok(())
            }
            Body::Call { cmd, args } => {
                let value = self.call(*cmd, args, line)?;
                if let (Some(name), Some(v)) = (&s.assign, value) {
                    self.vars.insert(name.clone(), v);
                    let _ = writeln!(self.out, "   {name} = {v:#x}");
                }
                Ok(())
            }
        }
    }

    fn say(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    /// The space a call acts on, or the error an Ex call's handle gives.
    fn target(&self) -> Result<&dyn VirtualSpace, Error> {
        match self.select {
            Select::Off => Ok(&*self.procs[&0].space),
            Select::Null => Err(Error::InvalidHandle),
            Select::Id(n) => match self.procs.get(&n) {
                None => Err(Error::InvalidHandle),
                Some(p) if p.exited => Err(Error::AccessDenied),
                Some(p) => Ok(&*p.space),
            },
        }
    }

    /// The space a `VirtualAlloc(Ex)` of `size` bytes acts on: as [`Session::target`], but a
    /// size of 0 is `ERROR_INVALID_PARAMETER` before the handle is looked at, as
    /// libvirtmem's `VirtualAllocEx` has it (Wine 8 answers so).
    fn alloc_target(&self, size: usize) -> Result<&dyn VirtualSpace, Error> {
        if size == 0 {
            return Err(Error::InvalidParameter);
        }
        self.target()
    }

    /// `Name(args)` as the Win32 call made: the `Ex` form with the process handle first
    /// for the functions that have one, the handle first for `ReadProcessMemory` /
    /// `WriteProcessMemory`, `VirtmemAccess` for an instruction fetch in another process.
    fn sig(&self, plain: &str, args: &str) -> String {
        let h = match self.select {
            Select::Off => return format!("{plain}({args})"),
            Select::Null => "NULL".to_string(),
            Select::Id(n) => n.to_string(),
        };
        match plain {
            "VirtualAlloc" | "VirtualFree" | "VirtualQuery" | "VirtualProtect" => format!("{plain}Ex({h}, {args})"),
            "exec" => format!("VirtmemAccess({h}, {args}, VIRTMEM_ACCESS_EXECUTE)"),
            _ => format!("{plain}({h}, {args})"),
        }
    }

    fn report<T>(&mut self, sig: &str, r: &Result<T, Error>, ok: impl FnOnce(&T) -> String) {
        let text = match r {
            Ok(v) => {
                self.last = Outcome::Ok;
                format!("{sig} = {}", ok(v))
            }
            Err(e) => {
                self.last = Outcome::Err(e.exception_code().unwrap_or(e.code()));
                if e.exception_code().is_some() {
                    format!("{sig} raised {}", describe(e))
                } else {
                    format!("{sig} failed: {}", describe(e))
                }
            }
        };
        self.say(&text);
    }

    fn call(&mut self, cmd: Cmd, a: &[Arg], line: usize) -> Result<Option<u64>, ScriptError> {
        let ex = self.select != Select::Off;
        Ok(match cmd {
            Cmd::Alloc => {
                let (addr, size) = (self.num(&a[0]), self.num(&a[1]));
                let (ty, prot) = (self.flags(&a[2], line)?, self.flags(&a[3], line)?);
                let sig = self.sig(
                    "VirtualAlloc",
                    &format!(
                        "{}, {size:#x}, {}, {}",
                        ptr(addr),
                        FlagKind::Alloc.format(ty),
                        FlagKind::Protect.format(prot)
                    ),
                );
                let r = self.alloc_target(size).and_then(|s| {
                    s.alloc(addr, size, AllocationType::from_bits_retain(ty), Protection::from_bits_retain(prot))
                });
                self.report(&sig, &r, |p| format!("{p:#x}"));
                self.rec(
                    TCall::Alloc { address: addr, size, alloc_type: ty, protect: prot },
                    &r,
                    |p| (*p as u64, Out::None),
                    0,
                );
                Some(r.unwrap_or(0) as u64)
            }
            Cmd::Free => {
                let (addr, size, ty) = (self.num(&a[0]), self.num(&a[1]), self.flags(&a[2], line)?);
                let sig = self.sig("VirtualFree", &format!("{}, {size:#x}, {}", ptr(addr), FlagKind::Free.format(ty)));
                let r = self.target().and_then(|s| s.free(addr, size, FreeType::from_bits_retain(ty)));
                self.report(&sig, &r, |_| "TRUE".into());
                self.rec(TCall::Free { address: addr, size, free_type: ty }, &r, |_| (1, Out::None), 0);
                Some(r.is_ok() as u64)
            }
            Cmd::Query => {
                let addr = self.num(&a[0]);
                let sig = self.sig("VirtualQuery", &ptr(addr));
                let r = self.target().and_then(|s| s.query(addr));
                self.report(&sig, &r, mbi_text);
                let call = TCall::Query { address: addr, buffer: TRACE_OUT, length: 48 };
                self.rec(call, &r, |m| (48, Out::Info((*m).into())), 0);
                Some(r.map_or(0, |m| m.region_size as u64))
            }
            Cmd::Protect => {
                let (addr, size, prot) = (self.num(&a[0]), self.num(&a[1]), self.flags(&a[2], line)?);
                let sig = self
                    .sig("VirtualProtect", &format!("{}, {size:#x}, {}", ptr(addr), FlagKind::Protect.format(prot)));
                let r = self.target().and_then(|s| s.protect(addr, size, Protection::from_bits_retain(prot)));
                self.report(&sig, &r, |old| format!("TRUE, old protection {}", FlagKind::Protect.format(old.bits())));
                let call = TCall::Protect { address: addr, size, new_protect: prot, old_protect: TRACE_OUT };
                self.rec(call, &r, |p| (1, Out::OldProtect(p.bits())), 0);
                Some(r.map_or(0, |p| p.bits() as u64))
            }
            Cmd::Read => {
                let (addr, len) = (self.num(&a[0]), self.eval(&a[1].expr));
                if let Some(msg) = out_of_range(cmd, 1, Param::Num, len) {
                    return Err(serr(line, a[1].col, msg));
                }
                let mut buf = vec![0u8; len as usize];
                let name = if ex { "ReadProcessMemory" } else { "read" };
                let sig = self.sig(name, &format!("{}, {len:#x}", ptr(addr)));
                let r = self.target().and_then(|s| s.read(addr, &mut buf)).map_err(|e| rpm_error(ex, e, addr, true));
                self.report(&sig, &r, |_| dump(&buf));
                if ex {
                    let call = TCall::ReadProcessMemory { address: addr, buffer: TRACE_OUT, size: buf.len(), done: 0 };
                    self.rec(call, &r, |_| (1, Out::None), 0);
                } else {
                    self.rec_access(addr, buf.len(), 0, &r);
                }
                Some(r.map_or(0, |_| buf.iter().take(8).rev().fold(0u64, |v, &b| v << 8 | b as u64)))
            }
            Cmd::Exec => {
                let addr = self.num(&a[0]);
                let len = a.get(1).map_or(1, |l| self.eval(&l.expr));
                if let Some(msg) = out_of_range(cmd, 1, Param::Num, len) {
                    return Err(serr(line, a[1].col, msg));
                }
                let mut buf = vec![0u8; len as usize];
                let sig = self.sig("exec", &format!("{}, {len:#x}", ptr(addr)));
                let r = self.target().and_then(|s| s.execute(addr, &mut buf));
                self.report(&sig, &r, |_| format!("fetched {}", dump(&buf)));
                self.rec_access(addr, len as usize, 8, &r);
                Some(r.is_ok() as u64)
            }
            Cmd::Write => {
                let addr = self.num(&a[0]);
                let mut data = Vec::new();
                for (i, arg) in a.iter().enumerate().skip(1) {
                    match &arg.expr {
                        Expr::Str(b) => data.extend_from_slice(b),
                        e => {
                            let v = self.eval(e);
                            match (u8::try_from(v), out_of_range(cmd, i, Param::Data, v)) {
                                (Ok(b), None) => data.push(b),
                                (_, msg) => return Err(serr(line, arg.col, msg.unwrap_or_default())),
                            }
                        }
                    }
                }
                self.write(addr, &data, ex, &format!("{}, {}", ptr(addr), show_data(&data)));
                None
            }
            Cmd::Fill => {
                let (addr, len, byte) = (self.num(&a[0]), self.eval(&a[1].expr), self.eval(&a[2].expr));
                for (i, v) in [(1, len), (2, byte)] {
                    if let Some(msg) = out_of_range(cmd, i, Param::Num, v) {
                        return Err(serr(line, a[i].col, msg));
                    }
                }
                // (out_of_range refused a byte over 0xFF.)
                let b = byte as u8;
                let data = vec![b; len as usize];
                self.write(addr, &data, ex, &format!("{}, {len:#x} x {b:#04x}", ptr(addr)));
                None
            }
            Cmd::Reset | Cmd::ResetUndo => {
                let (addr, size) = (self.num(&a[0]), self.num(&a[1]));
                let ty = if cmd == Cmd::Reset { AllocationType::RESET } else { AllocationType::RESET_UNDO };
                let sig = self.sig(
                    "VirtualAlloc",
                    &format!("{}, {size:#x}, {}, PAGE_NOACCESS", ptr(addr), FlagKind::Alloc.format(ty.bits())),
                );
                let r = self.alloc_target(size).and_then(|s| s.alloc(addr, size, ty, Protection::NOACCESS));
                self.report(&sig, &r, |p| format!("{p:#x}"));
                let call = TCall::Alloc { address: addr, size, alloc_type: ty.bits(), protect: 1 };
                self.rec(call, &r, |p| (*p as u64, Out::None), 0);
                None
            }
            Cmd::GetWriteWatch => {
                let (base, size) = (self.num(&a[0]), self.num(&a[1]));
                let flags = match a.get(2) {
                    Some(f) => self.flags(f, line)?,
                    None => 0,
                };
                let max = a.get(3).map_or(4096, |m| self.num(m));
                let sig = format!(
                    "GetWriteWatch({}, {}, {size:#x}, max {max})",
                    FlagKind::WriteWatch.format(flags),
                    ptr(base)
                );
                let r = match self.select {
                    Select::Off => self.target(),
                    // GetWriteWatch has no Ex form: it always acts on the current process.
                    _ => Ok(&*self.procs[&0].space),
                }
                .and_then(|s| s.get_write_watch(WriteWatchFlags::from_bits_retain(flags), base, size, max));
                self.report(&sig, &r, |pages| {
                    let list: Vec<String> = pages.iter().take(16).map(|p| format!("{p:#x}")).collect();
                    let more =
                        if pages.len() > 16 { format!(", ... ({} more)", pages.len() - 16) } else { String::new() };
                    format!("{} page(s) written: [{}{more}]", pages.len(), list.join(", "))
                });
                let call = TCall::GetWriteWatch {
                    flags,
                    base,
                    size,
                    addresses: TRACE_OUT,
                    count: Some(max),
                    granularity: TRACE_OUT_2,
                };
                self.rec(
                    call,
                    &r,
                    |p| (0, Out::WriteWatch { addresses: p.clone(), granularity: 0x1000 }),
                    u32::MAX as u64,
                );
                Some(r.map_or(0, |p| p.len() as u64))
            }
            Cmd::ResetWriteWatch => {
                let (base, size) = (self.num(&a[0]), self.num(&a[1]));
                let sig = format!("ResetWriteWatch({}, {size:#x})", ptr(base));
                let r = self.procs[&0].space.reset_write_watch(base, size);
                self.report(&sig, &r, |_| "0".into());
                self.rec(TCall::ResetWriteWatch { base, size }, &r, |_| (0, Out::None), u32::MAX as u64);
                None
            }
            Cmd::Lock | Cmd::Unlock => {
                let (addr, size) = (self.num(&a[0]), self.num(&a[1]));
                let name = if cmd == Cmd::Lock { "VirtualLock" } else { "VirtualUnlock" };
                let sig = format!("{name}({}, {size:#x})", ptr(addr));
                let space = &self.procs[&0].space;
                let r = if cmd == Cmd::Lock { space.lock(addr, size) } else { space.unlock(addr, size) };
                self.report(&sig, &r, |_| "TRUE".into());
                let call = if cmd == Cmd::Lock {
                    TCall::Lock { address: addr, size }
                } else {
                    TCall::Unlock { address: addr, size }
                };
                self.rec(call, &r, |_| (1, Out::None), 0);
                None
            }
            Cmd::Map => {
                let regions = match self.target() {
                    Ok(s) => s.regions(),
                    Err(e) => return Ok(self.no_process("map", e)),
                };
                let mut text = String::new();
                crate::map::write_table(&mut text, &regions);
                let _ = self.out.write_all(text.as_bytes());
                None
            }
            Cmd::Stats => {
                let (st, frag) = match self.target() {
                    Ok(s) => (s.stats(), crate::map::fragmentation(&s.regions())),
                    Err(e) => return Ok(self.no_process("stats", e)),
                };
                let text = format!(
                    "reserved {} in {} reservation(s), committed {}, {} page run(s), largest free block {}, {} free gap(s), fragmentation {frag:.2}%",
                    human(st.reserved as u64),
                    st.reservations,
                    human(st.committed as u64),
                    st.runs,
                    human(st.largest_free as u64),
                    st.free_gaps
                );
                self.say(&text);
                None
            }
            Cmd::SysInfo => {
                let si = match self.target() {
                    Ok(s) => s.system_info(),
                    Err(e) => return Ok(self.no_process("sysinfo", e)),
                };
                let text = format!(
                    "page size {:#x}, allocation granularity {:#x}, user space {:#x} to {:#x}, large pages {}",
                    si.page_size,
                    si.allocation_granularity,
                    si.minimum_application_address,
                    si.maximum_application_address,
                    if si.large_page_size == 0 { "none".into() } else { human(si.large_page_size as u64) }
                );
                self.say(&text);
                None
            }
            Cmd::Exit => {
                let n = self.eval(&a[0].expr);
                let Ok(n) = u32::try_from(n) else {
                    return Err(serr(line, a[0].col, out_of_range(cmd, 0, Param::Num, n).unwrap_or_default()));
                };
                // As libvirtmem's TerminateProcess: the current process (0) never exits, a
                // process never used is an unknown handle, one that has exited cannot exit
                // again; each can be `expect`ed.
                let r = match self.procs.get_mut(&n) {
                    _ if n == 0 => Err(Error::AccessDenied),
                    None => Err(Error::InvalidHandle),
                    Some(p) if p.exited => Err(Error::AccessDenied),
                    Some(p) => {
                        p.exited = true;
                        Ok(())
                    }
                };
                self.report(&format!("TerminateProcess({n}, 0)"), &r, |_| "TRUE, the process has exited".into());
                None
            }
            Cmd::Echo => {
                let parts: Vec<String> = a
                    .iter()
                    .map(|arg| match &arg.expr {
                        Expr::Str(b) => String::from_utf8_lossy(b).into_owned(),
                        e => format!("{:#x}", self.eval(e)),
                    })
                    .collect();
                self.say(&parts.join(" "));
                None
            }
            Cmd::Process | Cmd::Expect | Cmd::CommitLimit => None,
        })
    }

    /// `map`, `stats` or `sysinfo` on a process that cannot be used (a NULL handle, an
    /// exited process): report the error instead of showing another process.
    fn no_process(&mut self, what: &str, e: Error) -> Option<u64> {
        let process = match self.select {
            Select::Id(n) => n.to_string(),
            _ => "NULL".to_string(),
        };
        self.report(&format!("{what} (process {process})"), &Err::<(), _>(e), |_| String::new());
        None
    }

    fn write(&mut self, addr: usize, data: &[u8], ex: bool, args: &str) {
        let name = if ex { "WriteProcessMemory" } else { "write" };
        let sig = self.sig(name, args);
        let r = self
            .target()
            .and_then(|s| match ex {
                // As libvirtmem's: code pages are writable to it (`win32::with_code_writable`).
                true => virtmem::win32::with_code_writable(s, addr, data.len(), || s.write(addr, data))?,
                false => s.write(addr, data),
            })
            .map_err(|e| rpm_error(ex, e, addr, false));
        let n = data.len();
        self.report(&sig, &r, |_| format!("{n} byte(s) written"));
        if ex {
            let call = TCall::WriteProcessMemory { address: addr, buffer: TRACE_OUT, size: n, done: 0 };
            self.rec(call, &r, |_| (1, Out::None), 0);
        } else {
            self.rec_access(addr, n, 1, &r);
        }
    }

    /// Trace a checked CPU access (`kind` 0 read, 1 write, 8 instruction fetch) as
    /// libvirtmem's `VirtmemAccess`, since a guard page it meets is disarmed and replay
    /// must make it too: the exception raised is the result, any other failure 0xFFFFFFFF
    /// with the last error. (In `Ex` mode only `exec` is such an access: `read` and `write`
    /// are `ReadProcessMemory` and `WriteProcessMemory` there.)
    fn rec_access<T>(&self, address: usize, size: usize, kind: u32, r: &Result<T, Error>) {
        let call = TCall::Access { address, buffer: TRACE_OUT, size, kind, fault: TRACE_OUT_2 };
        let raised = r.as_ref().map_or_else(|e| e.exception_code().map(u64::from).ok_or(*e), |_| Ok(0));
        self.rec(call, &raised, |code| (*code, Out::None), 0xFFFF_FFFF);
    }
}

/// Read/WriteProcessMemory report inaccessible memory as error codes, not exceptions.
fn rpm_error(ex: bool, e: Error, address: usize, read: bool) -> Error {
    if ex {
        virtmem::win32::process_copy_error(e, address, !read)
    } else {
        e
    }
}

fn outcome_text(code: u32) -> String {
    if code >= 0x8000_0000 {
        let name = match code {
            virtmem::error::STATUS_ACCESS_VIOLATION => "STATUS_ACCESS_VIOLATION",
            virtmem::error::STATUS_GUARD_PAGE_VIOLATION => "STATUS_GUARD_PAGE_VIOLATION",
            _ => "an exception",
        };
        format!("{name} ({code:#010X})")
    } else {
        names::error_text(code)
    }
}

fn ptr(a: usize) -> String {
    if a == 0 {
        "NULL".into()
    } else {
        format!("{a:#x}")
    }
}

fn mbi_text(m: &MemoryBasicInformation) -> String {
    let raw = virtmem::win32::MEMORY_BASIC_INFORMATION::from(*m);
    format!(
        "{{ BaseAddress {:#x}, AllocationBase {}, AllocationProtect {}, RegionSize {:#x} ({}), State {}, Protect {}, Type {} }}",
        raw.BaseAddress,
        ptr(raw.AllocationBase),
        FlagKind::Protect.format(raw.AllocationProtect),
        raw.RegionSize,
        human(raw.RegionSize as u64),
        names::state_name(raw.State),
        FlagKind::Protect.format(raw.Protect),
        names::type_name(raw.Type)
    )
}

fn show_data(d: &[u8]) -> String {
    if !d.is_empty() && d.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        format!("\"{}\"", String::from_utf8_lossy(d))
    } else {
        let hex: Vec<String> = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!("[{}{}]", hex.join(" "), if d.len() > 16 { " ..." } else { "" })
    }
}

fn dump(buf: &[u8]) -> String {
    let hex: Vec<String> = buf.iter().take(32).map(|b| format!("{b:02x}")).collect();
    let ascii: String = buf.iter().take(32).map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '.' }).collect();
    let more = if buf.len() > 32 { format!(" ... ({} bytes)", buf.len()) } else { String::new() };
    format!("{}  \"{ascii}\"{more}", hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(text: &str) -> ScriptError {
        parse(text).expect_err(text)
    }

    #[test]
    fn a_hex_escape_is_two_hex_digits() {
        assert_eq!(lex("\"\\x41\\xfF\"", 1).expect("lexes")[0].tok, Tok::Str(vec![0x41, 0xff]));
        for bad in ["\"\\x+1\"", "\"\\x-1\"", "\"\\x4\"", "\"\\xg0\"", "\"\\x"] {
            let e = lex(bad, 1).expect_err(bad);
            assert!(e.msg.contains("needs two hex digits"), "{bad}: {e}");
        }
    }

    #[test]
    fn numbers_and_suffixes() {
        assert_eq!(number("0x10000"), Ok(0x10000));
        assert_eq!(number("64k"), Ok(0x10000));
        assert_eq!(number("0x4000_0000"), Ok(0x4000_0000));
        assert_eq!(number("1_000"), Ok(1000));
        assert_eq!(number("1TiB"), Ok(1 << 40));
        assert!(number("16777216T").is_err());
        assert!(number("0x").is_err());
        assert!(number("12q").is_err());
    }

    #[test]
    fn parse_errors_name_line_and_column() {
        let e = err_of("alloc 0, 4K, commit, rw\n  frobnicate 1\n");
        assert_eq!((e.line, e.col), (2, 3));
        assert!(e.msg.contains("unknown command `frobnicate`"), "{e}");
        let e = err_of("alloc 0, 4K, comit, rw");
        assert_eq!((e.line, e.col), (1, 14));
        assert!(e.msg.contains("unknown flag or variable `comit`"), "{e}");
        let e = err_of("free p, 0, release");
        assert_eq!((e.line, e.col), (1, 6));
        let e = err_of("alloc 0, 4K commit, rw");
        assert_eq!((e.line, e.col), (1, 13));
        let e = err_of("write 0x10000, \"abc");
        assert_eq!((e.line, e.col), (1, 16));
        let e = err_of("query 0x10000 $");
        assert_eq!((e.line, e.col), (1, 15));
        let e = err_of("query 1, 2");
        assert_eq!((e.line, e.col), (1, 10));
        let e = err_of("alloc 0, 4K");
        assert!(e.msg.contains("needs 4 argument"), "{e}");
        let e = err_of("v = map");
        assert!(e.msg.contains("no value"), "{e}");
        let e = err_of("alloc (0, 4K, commit, rw");
        assert_eq!((e.line, e.col), (1, 9));
        for name in ["x", "RO", "rw", "commit", "mem_release", "guard"] {
            let e = err_of(&format!("{name} = query 0"));
            assert_eq!((e.line, e.col), (1, 1));
            assert!(e.msg.contains("flag word"), "{name}: {e}");
        }
    }

    #[test]
    fn parenthesised_and_bare_argument_lists_agree() {
        assert!(parse("p = VirtualAlloc(NULL, 64K, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)").is_ok());
        assert!(parse("p = alloc (1 + 2) * GRANULE, 4K, reserve, rw").is_ok());
        assert!(parse("p = alloc 0, 4K, reserve, rw\nwrite p + 0x10, \"hi\", 0, 255").is_ok());
        for (with, without) in [
            ("process(1)", "process 1"),
            ("process(null)", "process null"),
            ("expect(ok)", "expect ok"),
            ("expect(ERROR_INVALID_ADDRESS)", "expect ERROR_INVALID_ADDRESS"),
            ("commitlimit(none)", "commitlimit none"),
        ] {
            let (a, b) = (parse(with).expect(with), parse(without).expect(without));
            assert_eq!(format!("{:?}", a[0].body), format!("{:?}", b[0].body), "{with}");
        }
        for text in ["commitlimit((1 + 1) * 4K)", "commitlimit (1 + 1) * 4K", "map()", "stats()", "exit(1)"] {
            assert!(parse(text).is_ok(), "{text}");
        }
        assert!(parse("process(1) 2").is_err());
        assert!(parse("expect(ok").is_err());
    }
}
