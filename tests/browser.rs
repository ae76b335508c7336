//! The chat page (src/web/index.html) in a real browser against the real server.
//!
//! Headless Chromium (Debian's `chromium`) is driven by `chromedriver` through the W3C
//! WebDriver HTTP API, spoken with a small HTTP/1.1 client over `TcpStream` and a small JSON
//! reader, so no new crate is needed. Each test asserts what a user of the page sees. Without
//! /usr/bin/chromium or chromedriver each test prints `SKIPPED: ...` and passes.
//!
//! `LOOPCHAT_SCREENSHOTS=1 cargo test --test browser screenshots` writes docs/screenshots/.

mod common;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::tls::{Certs, TlsClient};
use common::{Launch, Server};

/// The browser the tests drive: Debian's package, never a downloaded one.
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long anything the page should show may take. Generous: a browser on a busy CI machine
/// is slow to start and to render.
const PAGE_WAIT: Duration = Duration::from_secs(20);

/// W3C WebDriver's key for an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser test at a time: each starts Chromium, and several at once on a two-core machine
/// make every wait flaky.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The lock that serializes the tests, or `None` (after saying why) if the browser is missing.
fn browser_available(test: &str) -> Option<MutexGuard<'static, ()>> {
    let missing = if !Path::new(CHROMIUM).is_file() {
        Some(format!("{CHROMIUM} not found (apt-get install chromium)"))
    } else if !common::have("chromedriver") {
        Some("chromedriver not on PATH (apt-get install chromium-driver)".to_string())
    } else {
        None
    };
    if let Some(why) = missing {
        eprintln!("SKIPPED: {test}: {why}");
        return None;
    }
    // A test that panicked leaves the lock poisoned; the next one is still fine to run.
    Some(ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The real server on a free port (unless `args` name one) with its web door open.
fn web_server(args: &[&str]) -> Server {
    Launch::new(args).web().start()
}

// ---- The tests -------------------------------------------------------------------------------

/// A page user and a line client (as with nc) read each other's lines.
#[test]
fn page_and_line_client_talk_both_ways() {
    let Some(_one) = browser_available("page_and_line_client_talk_both_ways") else {
        return;
    };
    let server = web_server(&[]);
    let driver = Driver::start();
    let page = Page::open(&driver, &server, (1000, 800));
    let mut nc = server.client();

    page.type_line("hello from the page");
    nc.expect_eventually(&format!("{}: hello from the page", page.name));
    // The server does not echo a line to its sender: the page shows it itself.
    page.wait_log_contains(&format!("{}: hello from the page", page.name));

    nc.send("hello from the line client");
    let want = format!("{}: hello from the line client", nc.name);
    page.wait_log_contains(&want);
    let kind = page.js(
        "return [...document.getElementById('log').children]
             .find(el => el.textContent === arguments[0])?.className",
        &[Json::Str(want)],
    );
    assert!(
        kind.as_str().is_some_and(|k| k.contains("msg")),
        "a message is shown as a message, got class {kind:?}"
    );

    // The room list comes from the page's own /rooms, whose answer stays out of the log.
    page.wait_until(
        "the room list to show #lobby with its members",
        "return document.getElementById('rooms').textContent.includes('#lobby (')",
    );
    let log = page.log_text();
    assert!(
        !log.contains(" room:") && !log.contains(" rooms:") && !log.contains("#lobby ("),
        "the page's own /rooms answer is in the log: {log:?}"
    );
    page.assert_no_console_errors();
}

/// The page over https:// (a certificate made at test time), chatting with a TLS line client.
/// A page served over https:// may only open a `wss://` WebSocket (a `ws://` one is blocked as
/// mixed content), so a page that chats is chatting over TLS.
#[test]
fn page_over_https_chats_over_wss() {
    let Some(_one) = browser_available("page_over_https_chats_over_wss") else {
        return;
    };
    let certs = Certs::new();
    let args = certs.args();
    let server = web_server(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let driver = Driver::start();
    let url = format!("https://localhost:{}/", server.addr.port());
    let page = Page::open_url(&driver, &url, (1000, 800));
    let protocol = page.js("return location.protocol", &[]);
    assert_eq!(protocol.as_str(), Some("https:"));
    let mut line = TlsClient::connect(server.addr, &certs).greeted();

    page.type_line("hello over wss");
    line.expect_eventually(&format!("{}: hello over wss", page.name));
    line.send("hello over TLS");
    page.wait_log_contains(&format!("{}: hello over TLS", line.name));
    page.assert_no_console_errors();
}

/// Two page users in different rooms: the lines of #a reach only the one in #a.
#[test]
fn rooms_keep_their_lines_apart() {
    let Some(_one) = browser_available("rooms_keep_their_lines_apart") else {
        return;
    };
    let server = web_server(&[]);
    // A line client makes #a first, so the pages' room lists show it to click on.
    let mut nc = server.client();
    nc.send("/join #a");
    nc.expect_prefix("[#a] [SERVER] End of history");
    let driver = Driver::start();
    let alice = Page::open(&driver, &server, (1000, 800));
    let bob = Page::open(&driver, &server, (1000, 800));

    alice.click_room("#a");
    alice.wait_log_contains("You joined #a (2 here)");
    nc.expect_eventually(&format!("[#a] [SERVER] {} joined", alice.name));

    alice.type_line("only for #a");
    nc.expect_eventually(&format!("[#a] {}: only for #a", alice.name));
    nc.send("from the line client in #a");
    alice.wait_log_contains(&format!("{}: from the line client in #a", nc.name));

    // The server keeps one order: once bob sees a later lobby line, he would have had the
    // lines of #a before it, had they been sent to him.
    nc.send("/join #lobby");
    nc.expect_eventually("[SERVER] What you type goes to #lobby now");
    nc.send("a line for the lobby");
    bob.wait_log_contains(&format!("{}: a line for the lobby", nc.name));
    let bobs = bob.log_text();
    assert!(
        !bobs.contains("only for #a") && !bobs.contains("from the line client in #a"),
        "bob, not in #a, was shown its lines: {bobs:?}"
    );

    // Alice reads the lobby's line in the lobby's view, not in the view of #a.
    alice.click_room("#lobby");
    alice.wait_log_contains(&format!("{}: a line for the lobby", nc.name));
    assert!(
        !alice.log_text().contains("from the line client in #a"),
        "the lobby's view shows a line of #a"
    );
    alice.assert_no_console_errors();
    bob.assert_no_console_errors();
}

/// Markup in a line is shown as text: nothing in it runs or renders.
#[test]
fn markup_is_shown_as_text() {
    let Some(_one) = browser_available("markup_is_shown_as_text") else {
        return;
    };
    let server = web_server(&[]);
    let driver = Driver::start();
    let page = Page::open(&driver, &server, (1000, 800));
    let mut nc = server.client();

    let evil = "<script>window.pwned=1</script><b>bold</b>";
    nc.send(evil);
    page.wait_log_contains(&format!("{}: {evil}", nc.name));
    // The page's own echo of what its user types is text too.
    page.type_line("<i>not italic</i><img src=x onerror=window.pwned=2>");
    nc.expect_eventually(&format!(
        "{}: <i>not italic</i><img src=x onerror=window.pwned=2>",
        page.name
    ));
    page.wait_log_contains("<i>not italic</i>");

    let pwned = page.js("return typeof window.pwned", &[]);
    assert_eq!(pwned.as_str(), Some("undefined"), "script in a line ran");
    let elements = page.js(
        "return document.querySelectorAll('#log b, #log i, #log img, #log script').length",
        &[],
    );
    assert_eq!(elements, Json::Num(0.0), "markup in a line became elements");
    page.assert_no_console_errors();
}

/// Joining a room shows its past messages, marked as history.
#[test]
fn joining_shows_the_rooms_history() {
    let Some(_one) = browser_available("joining_shows_the_rooms_history") else {
        return;
    };
    let server = web_server(&[]);
    let mut nc = server.client();
    nc.send("/join #rust");
    nc.expect_prefix("[#rust] [SERVER] End of history");
    for line in ["first in rust", "/me waves in rust", "second in rust"] {
        nc.send(line);
    }
    // Asking for the history back proves the server has kept all three.
    nc.send("/history");
    nc.expect_eventually("[#rust] [SERVER] End of history (3 messages)");

    let driver = Driver::start();
    let page = Page::open(&driver, &server, (1000, 800));
    page.type_line("/join #rust");
    page.wait_log_contains("End of history (3 messages)");
    let history = page.js(
        "return [...document.querySelectorAll('#log > .history')].map(el => el.textContent)",
        &[],
    );
    let history: Vec<&str> = match &history {
        Json::Arr(items) => items.iter().filter_map(Json::as_str).collect(),
        other => panic!("history lines: {other:?}"),
    };
    let said = [
        format!("{}: first in rust", nc.name),
        format!("* {} waves in rust", nc.name),
        format!("{}: second in rust", nc.name),
    ];
    assert_eq!(history.len(), 3, "history lines shown: {history:?}");
    for (shown, said) in history.iter().zip(&said) {
        // Each shows the time it was said (HH:MM:SS) and the line as it was.
        let (time, rest) = shown.split_at(8);
        assert!(
            time.bytes().enumerate().all(|(i, b)| match i {
                2 | 5 => b == b':',
                _ => b.is_ascii_digit(),
            }),
            "no time in the history line {shown:?}"
        );
        assert_eq!(rest.trim_start(), said, "history line {shown:?}");
    }

    // The page now shows #rust: a new line there appears at once.
    nc.send("live in rust");
    page.wait_log_contains(&format!("{}: live in rust", nc.name));
    page.assert_no_console_errors();
}

/// The page says when the server has gone and comes back by itself when it returns, with the
/// name and the rooms it had.
#[test]
fn page_reconnects_when_the_server_returns() {
    let Some(_one) = browser_available("page_reconnects_when_the_server_returns") else {
        return;
    };
    let mut server = web_server(&[]);
    let port = server.addr.port().to_string();
    let driver = Driver::start();
    let page = Page::open(&driver, &server, (1000, 800));
    page.type_line("/nick pagey");
    page.wait_log_contains("You are now known as pagey");
    page.type_line("/join #back");
    page.wait_log_contains("You joined #back");

    server.signal("INT");
    page.wait_log_contains("[SERVER] Server shutting down.");
    page.wait_until(
        "the state to say disconnected",
        "return document.getElementById('state').textContent.includes('disconnected')",
    );
    assert!(server.wait_exit(Duration::from_secs(5)).success());

    // A new server on the same port, with a line client waiting in #back.
    let server = web_server(&["--port", &port]);
    let mut nc = server.client();
    nc.send("/join #back");
    nc.expect_prefix("[#back] [SERVER] End of history");
    page.wait_connected();

    // The page asks for its name and its room again by itself.
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        nc.send("/who #back");
        let who = nc.expect_prefix("[SERVER] ");
        if who.contains(" in #back: ") && who.contains("pagey") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not come back to #back as pagey: {who:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    page.type_line("back again");
    nc.expect_eventually("[#back] pagey: back again");
}

/// Opening the page adds one user, not more. Chromium preconnects spare sockets to the page's
/// origin that send nothing; the server greets a silent connection as a line client (after
/// `config::web::GREET`) but makes it known only once it speaks, so they are nobody.
#[test]
fn opening_the_page_adds_one_user() {
    let Some(_one) = browser_available("opening_the_page_adds_one_user") else {
        return;
    };
    let server = web_server(&[]);
    let mut nc = server.client();
    let driver = Driver::start();
    let page = Page::open(&driver, &server, (1000, 800));
    // Long past the greeting delay: a silent socket would have been greeted by now.
    thread::sleep(Duration::from_secs(1));
    nc.send("/who");
    let who = loop {
        let line = nc.line();
        if line.starts_with("[SERVER] ") && line.contains(" online: ") {
            break line;
        }
    };
    let mut names = [nc.name.clone(), page.name.clone()];
    names.sort();
    assert_eq!(
        who,
        format!("[SERVER] 2 online: {}, {}", names[0], names[1]),
        "users the server sees after one page load"
    );
}

/// A line over 200 bytes of UTF-8 is refused by the page, visibly, and never sent.
#[test]
fn a_line_too_long_is_refused_before_sending() {
    let Some(_one) = browser_available("a_line_too_long_is_refused_before_sending") else {
        return;
    };
    let server = web_server(&[]);
    let driver = Driver::start();
    let page = Page::open(&driver, &server, (1000, 800));
    let mut nc = server.client();

    // 101 characters, under the input's maxlength, but 202 bytes.
    let long = "é".repeat(101);
    page.type_line(&long);
    page.wait_until(
        "a hint that the line is too long",
        "return document.body.textContent.includes('Too long')",
    );
    let kept = page.js("return document.getElementById('input').value", &[]);
    assert_eq!(
        kept.as_str(),
        Some(long.as_str()),
        "the line is kept to edit"
    );
    nc.expect_silence(Duration::from_millis(500));

    // Shortened to fit, it goes.
    page.type_keys("\u{E003}\u{E007}"); // Backspace, Enter
    nc.expect_eventually(&format!("{}: {}", page.name, "é".repeat(100)));
    page.assert_no_console_errors();
}

/// The screenshots in docs/screenshots/, written only with LOOPCHAT_SCREENSHOTS=1 so that
/// `make test` never rewrites the docs.
#[test]
fn screenshots() {
    if std::env::var("LOOPCHAT_SCREENSHOTS").as_deref() != Ok("1") {
        eprintln!(
            "screenshots: not written (set LOOPCHAT_SCREENSHOTS=1 to write docs/screenshots/)"
        );
        return;
    }
    let Some(_one) = browser_available("screenshots") else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();

    let server = web_server(&[]);
    let mut alice = server.named("alice");
    let mut bob = server.named("bob");
    let mut erin = server.named("erin");
    alice.send("/join #rust");
    alice.expect_prefix("[#rust] [SERVER] End of history");
    alice.send("/topic borrowing, lifetimes and mio");
    alice.send("does anyone here use mio?");
    bob.send("/join #rust");
    bob.expect_prefix("[#rust] [SERVER] End of history");
    bob.send("yes: one event loop, no threads");
    erin.send("/join #design");
    erin.expect_prefix("[#design] [SERVER] End of history");
    erin.send("/join #lobby");
    erin.send("morning all");

    let driver = Driver::start();
    let page = Page::open(&driver, &server, (1000, 800));
    page.type_line("/nick carol");
    page.wait_log_contains("You are now known as carol");
    erin.expect_eventually(&format!("[SERVER] {} is now known as carol", page.name));
    erin.send("hi carol, the mio talk is in #rust");
    page.wait_log_contains("erin: hi carol");
    page.type_line("/join #rust");
    page.wait_log_contains("End of history (2 messages)");
    page.type_line("I wrote a chat server with it");
    alice.expect_eventually("[#rust] carol: I wrote a chat server with it");
    alice.send("nice! how many clients?");
    page.type_line("/me checks the benchmark");
    bob.expect_eventually("[#rust] * carol checks the benchmark");
    page.type_line("10,000 in one thread, see docs/bench");
    bob.expect_eventually("[#rust] carol: 10,000 in one thread, see docs/bench");
    bob.send("/msg carol can I borrow your load generator?");
    page.wait_log_contains("[PM from bob] can I borrow your load generator?");
    erin.send("lunch at noon?");
    page.type_line("/who #rust");
    page.wait_log_contains("[SERVER] 3 in #rust: alice, bob, carol");
    page.save_screenshot(&dir.join("chat.png"));

    let phone = Page::open(&driver, &server, (360, 740));
    phone.type_line("/nick dave");
    phone.wait_log_contains("You are now known as dave");
    phone.type_line("/join #rust");
    phone.wait_log_contains("End of history");
    alice.expect_eventually("[#rust] [SERVER] dave joined");
    alice.send("welcome dave");
    phone.wait_log_contains("alice: welcome dave");
    phone.type_line("hello from my phone");
    bob.expect_eventually("[#rust] dave: hello from my phone");
    phone.save_screenshot(&dir.join("phone.png"));

    // The server goes away: the page says so and counts down to its next try.
    server.signal("INT");
    page.wait_until(
        "the state to say disconnected",
        "return document.getElementById('state').textContent.includes('reconnecting')",
    );
    page.save_screenshot(&dir.join("disconnected.png"));
}

// ---- The page, as a user sees it --------------------------------------------------------------

/// One browser session showing the chat page, connected, with the name the server gave it.
struct Page<'d> {
    session: Session<'d>,
    name: String,
}

impl<'d> Page<'d> {
    /// Opens the page served by `server` in a new browser window of `size` (width, height).
    fn open(driver: &'d Driver, server: &Server, size: (u32, u32)) -> Page<'d> {
        Page::open_url(driver, &format!("http://{}/", server.addr), size)
    }

    /// Opens the page at `url` (https:// with a certificate made by the test, which the
    /// session accepts).
    fn open_url(driver: &'d Driver, url: &str, size: (u32, u32)) -> Page<'d> {
        let session = driver.session(size);
        session.navigate(url);
        let mut page = Page {
            session,
            name: String::new(),
        };
        page.wait_connected();
        page.name = page.wait_name();
        page
    }

    fn wait_connected(&self) {
        // "connected", not "connecting" and not "disconnected, ...". Until the page is there
        // (still loading, or a browser's error page), there is no state to read.
        self.wait_until(
            "the state to say connected",
            "const t = document.getElementById('state')?.textContent ?? '';
             return /\\bconnected\\b/.test(t) && !t.includes('disconnected')",
        );
    }

    /// The name the page shows, once it shows one given by this connection.
    fn wait_name(&self) -> String {
        // The log's intro line names the client; the page must show that name.
        let intro = self.wait_until(
            "the intro line",
            "const lines = [...document.getElementById('log').children].map(el => el.textContent);
             return lines.reverse().find(t => t.startsWith('[SERVER] You are '))",
        );
        let name = intro
            .as_str()
            .and_then(|t| t.strip_prefix("[SERVER] You are "))
            .and_then(|t| t.split_once(". "))
            .map(|(name, _)| name.to_string())
            .unwrap_or_else(|| panic!("no name in the intro line {intro:?}"));
        self.wait_until_with(
            "the page to show its name",
            "return document.body.textContent.includes(arguments[0])",
            &[Json::Str(name.clone())],
        );
        name
    }

    /// Types `text` into the input box and presses Enter.
    fn type_line(&self, text: &str) {
        self.type_keys(&format!("{text}\u{E007}"));
    }

    /// Sends keystrokes to the input box (WebDriver key codes allowed).
    fn type_keys(&self, keys: &str) {
        let input = self.session.find("#input");
        self.session.cmd(
            "POST",
            &format!("/element/{input}/value"),
            &format!("{{\"text\":{}}}", quote(keys)),
        );
    }

    /// Clicks the entry of `room` in the room list.
    fn click_room(&self, room: &str) {
        // The list is redrawn whenever the page refreshes it: find the entry afresh until the
        // click lands on a live element.
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let entry = self.wait_until_with(
                &format!("{room} in the room list"),
                "const li = [...document.querySelectorAll('#rooms > *')]
                     .find(el => el.textContent.split(/[\\s(]/).includes(arguments[0]));
                 return li && (li.querySelector('button, a') || li)",
                &[Json::Str(room.to_string())],
            );
            let id = element_id(&entry);
            match self
                .session
                .try_cmd("POST", &format!("/element/{id}/click"), "{}")
            {
                Ok(_) => return,
                Err(e) if e.contains("stale") && Instant::now() < deadline => continue,
                Err(e) => panic!("click on {room}: {e}"),
            }
        }
    }

    /// Fails on anything the browser logged as an error: a script error, or a line of the
    /// page's Content-Security-Policy that blocked something.
    fn assert_no_console_errors(&self) {
        let entries = self.session.cmd("POST", "/se/log", r#"{"type":"browser"}"#);
        let Json::Arr(entries) = entries else {
            panic!("browser log: {entries:?}");
        };
        let errors: Vec<&str> = entries
            .iter()
            .filter(|e| e.get("level").and_then(Json::as_str) == Some("SEVERE"))
            .filter_map(|e| e.get("message").and_then(Json::as_str))
            .collect();
        assert!(errors.is_empty(), "the browser logged errors: {errors:?}");
    }

    fn log_text(&self) -> String {
        let text = self.js("return document.getElementById('log').textContent", &[]);
        text.as_str().expect("log text").to_string()
    }

    fn wait_log_contains(&self, text: &str) {
        self.wait_until_with(
            &format!("the log to show {text:?}"),
            "return document.getElementById('log').textContent.includes(arguments[0])",
            &[Json::Str(text.to_string())],
        );
    }

    fn js(&self, script: &str, args: &[Json]) -> Json {
        self.session.execute(script, args)
    }

    /// Runs `script` until it returns something truthy; returns that.
    fn wait_until(&self, what: &str, script: &str) -> Json {
        self.wait_until_with(what, script, &[])
    }

    fn wait_until_with(&self, what: &str, script: &str, args: &[Json]) -> Json {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let value = self.session.execute(script, args);
            if value.truthy() {
                return value;
            }
            if Instant::now() > deadline {
                let log = self.js(
                    "return [...document.getElementById('log').children].slice(-12)
                         .map(el => el.textContent)",
                    &[],
                );
                let state = self.js("return document.getElementById('state').textContent", &[]);
                panic!("timed out waiting for {what}; state {state:?}, last lines {log:?}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn save_screenshot(&self, path: &Path) {
        let png = self.session.cmd("GET", "/screenshot", "");
        let png = base64_decode(png.as_str().expect("screenshot data"));
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
    }
}

// ---- chromedriver and its sessions -------------------------------------------------------------

/// A chromedriver process on a free port, killed by its PID when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        // The port is free when we look; another process could take it before chromedriver
        // does, so a driver that dies at once is started again on another port.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn chromedriver");
            let mut driver = Driver { child, port };
            if driver.wait_ready() {
                return driver;
            }
        }
        panic!("chromedriver did not start");
    }

    /// True once `GET /status` says ready; false if the process exited first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + PAGE_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok((200, body)) = http(self.port, "GET", "/status", "") {
                let ready = Json::parse(&body)
                    .get("value")
                    .and_then(|v| v.get("ready"))
                    .is_some_and(Json::truthy);
                if ready {
                    return true;
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// A new browser (a session) with a window of `size`, headless.
    fn session(&self, (width, height): (u32, u32)) -> Session<'_> {
        // Our own profile directory, removed when the session ends: the one chromedriver
        // makes by itself is left behind in /tmp, a few MB a browser.
        static SESSIONS: AtomicUsize = AtomicUsize::new(0);
        let profile = std::env::temp_dir().join(format!(
            "loopchat-browser-{}-{}",
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::Relaxed)
        ));
        let args = format!(
            r#"["--headless=new","--no-sandbox","--disable-gpu","--window-size={width},{height}","--user-data-dir={}"]"#,
            profile.display()
        );
        // Headless Chromium makes no window narrower than 500 px: a phone's width needs the
        // driver's device emulation, which sets the page's viewport itself.
        let phone = if width < 500 {
            format!(
                r#","mobileEmulation":{{"deviceMetrics":{{"width":{width},"height":{height},"pixelRatio":1}}}}"#
            )
        } else {
            String::new()
        };
        let caps = format!(
            r#"{{"capabilities":{{"alwaysMatch":{{"acceptInsecureCerts":true,"goog:loggingPrefs":{{"browser":"ALL"}},"goog:chromeOptions":{{"binary":{},"args":{args}{phone}}}}}}}}}"#,
            quote(CHROMIUM)
        );
        let (status, body) = http(self.port, "POST", "/session", &caps).expect("POST /session");
        let reply = Json::parse(&body);
        let Some(id) = reply
            .get("value")
            .and_then(|v| v.get("sessionId"))
            .and_then(Json::as_str)
        else {
            remove_profile(&profile);
            panic!("no session (HTTP {status}): {body}");
        };
        Session {
            driver: self,
            id: id.to_string(),
            profile,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver session: one browser. Ended when dropped, which makes chromedriver close
/// the browser it started (sessions drop before their driver, which they borrow).
struct Session<'d> {
    driver: &'d Driver,
    id: String,
    /// The browser's profile directory, ours to remove.
    profile: PathBuf,
}

impl Session<'_> {
    /// A WebDriver command on this session (`path` after `/session/{id}`); panics on an error.
    fn cmd(&self, method: &str, path: &str, body: &str) -> Json {
        self.try_cmd(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// A WebDriver command; its `value`, or the error's text.
    fn try_cmd(&self, method: &str, path: &str, body: &str) -> Result<Json, String> {
        let path = format!("/session/{}{path}", self.id);
        let (status, text) =
            http(self.driver.port, method, &path, body).map_err(|e| e.to_string())?;
        let value = Json::parse(&text)
            .get("value")
            .cloned()
            .unwrap_or(Json::Null);
        if status == 200 {
            Ok(value)
        } else {
            let field = |k| {
                value
                    .get(k)
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            Err(format!(
                "HTTP {status}: {} {}",
                field("error"),
                field("message")
            ))
        }
    }

    fn navigate(&self, url: &str) {
        self.cmd("POST", "/url", &format!("{{\"url\":{}}}", quote(url)));
    }

    /// Runs `script` in the page (a function body; `arguments[i]` are `args`).
    fn execute(&self, script: &str, args: &[Json]) -> Json {
        let args: Vec<String> = args.iter().map(Json::to_text).collect();
        let body = format!(
            "{{\"script\":{},\"args\":[{}]}}",
            quote(script),
            args.join(",")
        );
        self.cmd("POST", "/execute/sync", &body)
    }

    /// The element matching a CSS selector.
    fn find(&self, css: &str) -> String {
        let body = format!("{{\"using\":\"css selector\",\"value\":{}}}", quote(css));
        element_id(&self.cmd("POST", "/element", &body))
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = http(
            self.driver.port,
            "DELETE",
            &format!("/session/{}", self.id),
            "",
        );
        remove_profile(&self.profile);
    }
}

/// Removes a browser's profile directory and the directory of its singleton socket, which
/// Chromium keeps elsewhere in /tmp and links to from the profile.
fn remove_profile(profile: &Path) {
    let socket_dir = std::fs::read_link(profile.join("SingletonSocket"))
        .ok()
        .and_then(|target| target.parent().map(Path::to_path_buf));
    // The browser may still be writing for a moment after it was told to quit.
    for _ in 0..20 {
        match std::fs::remove_dir_all(profile) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                thread::sleep(Duration::from_millis(50));
            }
            _ => break,
        }
    }
    if let Some(dir) = socket_dir.filter(|d| d.starts_with(std::env::temp_dir())) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn element_id(reference: &Json) -> String {
    reference
        .get(ELEMENT)
        .and_then(Json::as_str)
        .unwrap_or_else(|| panic!("not an element: {reference:?}"))
        .to_string()
}

// ---- HTTP/1.1, just enough for chromedriver ------------------------------------------------

/// One request on its own connection; the status and the body.
fn http(port: u16, method: &str, path: &str, body: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    // Starting a browser is the slowest answer, a few seconds.
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(reply) = parse_response(&raw, false)? {
            return Ok(reply);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return parse_response(&raw, true)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "short response"));
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// The status and body of a complete response in `raw`, `None` if more is to come.
/// The body is delimited by Content-Length, chunked encoding, or the end of the connection.
fn parse_response(raw: &[u8], closed: bool) -> io::Result<Option<(u16, String)>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let body = &raw[end + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        return Ok((body.len() >= len).then(|| (status, text(&body[..len]))));
    }
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            let size_text = text(&rest[..eol]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                return Ok(Some((status, text(&out))));
            }
            let start = eol + 2;
            if rest.len() < start + size + 2 {
                return Ok(None);
            }
            out.extend_from_slice(&rest[start..start + size]);
            rest = &rest[start + size + 2..];
        }
    }
    Ok(closed.then(|| (status, text(body))))
}

// ---- JSON, just enough for WebDriver -------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Json {
        let mut p = JsonReader {
            s: text.as_bytes(),
            i: 0,
        };
        p.value()
            .unwrap_or_else(|e| panic!("bad JSON ({e}) in {text:?}"))
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// As JavaScript would test it in an `if`.
    fn truthy(&self) -> bool {
        match self {
            Json::Null => false,
            Json::Bool(b) => *b,
            Json::Num(n) => *n != 0.0 && !n.is_nan(),
            Json::Str(s) => !s.is_empty(),
            Json::Arr(_) | Json::Obj(_) => true,
        }
    }

    fn to_text(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => b.to_string(),
            Json::Num(n) => n.to_string(),
            Json::Str(s) => quote(s),
            Json::Arr(items) => {
                let items: Vec<String> = items.iter().map(Json::to_text).collect();
                format!("[{}]", items.join(","))
            }
            Json::Obj(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{}", quote(k), v.to_text()))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }
        }
    }
}

/// `s` as a JSON string literal, escaped by the benchmark's JSON writer.
fn quote(s: &str) -> String {
    loopchat_bench::json::Json::Str(s.to_owned()).to_string()
}

/// A recursive-descent JSON reader over the bytes of a document.
struct JsonReader<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonReader<'_> {
    fn peek(&mut self) -> Option<u8> {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> Result<(), String> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", b as char, self.i))
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(value)
        } else {
            Err(format!("bad literal at {}", self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        match self.peek().ok_or("unexpected end")? {
            b'{' => {
                self.i += 1;
                let mut fields = Vec::new();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    let key = self.string()?;
                    self.eat(b':')?;
                    fields.push((key, self.value()?));
                    if self.peek() == Some(b',') {
                        self.i += 1;
                    } else {
                        self.eat(b'}')?;
                        return Ok(Json::Obj(fields));
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    if self.peek() == Some(b',') {
                        self.i += 1;
                    } else {
                        self.eat(b']')?;
                        return Ok(Json::Arr(items));
                    }
                }
            }
            b'"' => self.string().map(Json::Str),
            b't' => self.literal("true", Json::Bool(true)),
            b'f' => self.literal("false", Json::Bool(false)),
            b'n' => self.literal("null", Json::Null),
            _ => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|b| b"+-0123456789.eE".contains(b))
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                text.parse()
                    .map(Json::Num)
                    .map_err(|_| format!("bad value at {start}"))
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("unterminated escape")?;
                    self.i += 1;
                    let c = match e {
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => self.unicode_escape()?,
                        other => other as char, // \" \\ \/
                    };
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
                b => out.push(b),
            }
        }
    }

    /// The character of a `\uXXXX` escape (the `\u` read), joining a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let hex = |r: &mut Self| -> Result<u32, String> {
            let digits = r.s.get(r.i..r.i + 4).ok_or("short \\u escape")?;
            r.i += 4;
            u32::from_str_radix(std::str::from_utf8(digits).unwrap_or("x"), 16)
                .map_err(|e| e.to_string())
        };
        let first = hex(self)?;
        let code = if (0xD800..0xDC00).contains(&first) && self.s[self.i..].starts_with(b"\\u") {
            self.i += 2;
            let low = hex(self)?;
            0x10000 + ((first - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF)
        } else {
            first
        };
        Ok(char::from_u32(code).unwrap_or('\u{FFFD}'))
    }
}

/// Standard base64 (the screenshot's PNG) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None, // padding and line breaks
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn json_and_base64_readers() {
    let doc = Json::parse(r#"{"value":{"a":[1,-2.5e1,true,null],"s":"x\"\\\u00e9\ud83d\ude00"}}"#);
    let v = doc.get("value").unwrap();
    assert_eq!(
        v.get("a"),
        Some(&Json::Arr(vec![
            Json::Num(1.0),
            Json::Num(-25.0),
            Json::Bool(true),
            Json::Null
        ]))
    );
    assert_eq!(v.get("s").and_then(Json::as_str), Some("x\"\\é😀"));
    assert_eq!(Json::parse(&v.to_text()), *v);
    assert_eq!(base64_decode("aGVsbG8sIHdvcmxkIQ=="), b"hello, world!");
}
