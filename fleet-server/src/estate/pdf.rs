//! The availability report as a PDF, written with `pdf-writer` (four small dependencies, no
//! browser, no font files): A4 pages of text tables in the base-14 Helvetica font, which every
//! PDF reader has, so nothing is embedded. Text is WinAnsi: characters outside Latin-1 are
//! written as `?`. The figures are the ones the HTML and CSV forms show ([`super::report`]).

use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str, TextStr};

use super::availability::Figures;
use super::report::{Report, minutes, pct_text, title};

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 40.0;
const LINE: f32 = 13.0;
const SIZE: f32 = 9.0;
/// Left edge of each table column: name, machines, %, scheduled, unavailable, maintenance, closed.
const COLS: [f32; 7] = [40.0, 255.0, 300.0, 355.0, 420.0, 485.0, 545.0];

/// One line of the document: a heading, a paragraph, or a table row of cells.
enum Line {
    Heading(String),
    Text(String),
    Row(Vec<String>),
}

/// Latin-1 bytes for WinAnsi (which agrees with Latin-1 on the printable range).
fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| {
            if (' '..='~').contains(&c) || ('\u{a0}'..='\u{ff}').contains(&c) {
                c as u8
            } else {
                b'?'
            }
        })
        .collect()
}

fn header(what: &str) -> Line {
    Line::Row(
        [
            what,
            "machines",
            "avail %",
            "sched min",
            "unavail min",
            "maint min",
            "closed min",
        ]
        .map(String::from)
        .to_vec(),
    )
}

fn row(name: String, n: usize, f: &Figures) -> Line {
    Line::Row(vec![
        name,
        n.to_string(),
        pct_text(f.availability_pct),
        minutes(f.scheduled_ms),
        minutes(f.unavailable_ms),
        minutes(f.maintenance_ms),
        minutes(f.closed_ms),
    ])
}

/// Wraps a paragraph at about `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut last = String::new();
    for w in text.split_whitespace() {
        if !last.is_empty() && last.len() + w.len() + 1 > width {
            out.push(std::mem::take(&mut last));
        }
        if !last.is_empty() {
            last.push(' ');
        }
        last.push_str(w);
    }
    out.push(last);
    out
}

fn lines(r: &Report) -> Vec<Line> {
    let mut l = vec![Line::Heading(title(r))];
    l.extend(wrap(&r.note, 110).into_iter().map(Line::Text));
    for (what, groups) in [("retailer", &r.retailers), ("store", &r.stores)] {
        l.push(Line::Text(String::new()));
        l.push(Line::Heading(format!("{what}s")));
        l.push(header(what));
        l.extend(
            groups
                .iter()
                .map(|g| row(format!("{} ({})", g.name, g.id), g.machines, &g.figures)),
        );
    }
    l.push(Line::Text(String::new()));
    l.push(Line::Heading("machines".into()));
    l.push(header("machine"));
    l.extend(
        r.machines
            .iter()
            .map(|m| row(format!("{} @ {}", m.id, m.store), 1, &m.figures)),
    );
    if !r.unknown_sites.is_empty() {
        l.push(Line::Text(String::new()));
        l.push(Line::Heading("machines at unknown sites (not counted)".into()));
        for u in &r.unknown_sites {
            let site = if u.site.is_empty() { "(no site)" } else { &u.site };
            l.extend(
                wrap(&format!("{site}: {}", u.machines.join(", ")), 110)
                    .into_iter()
                    .map(Line::Text),
            );
        }
    }
    l
}

/// The report as a PDF document.
pub fn render(r: &Report) -> Vec<u8> {
    let per_page = ((PAGE_H - 2.0 * MARGIN) / LINE) as usize;
    let all = lines(r);
    let pages: Vec<&[Line]> = all.chunks(per_page.max(1)).collect();
    let (catalog, tree, font, bold, info) = (Ref::new(1), Ref::new(2), Ref::new(3), Ref::new(4), Ref::new(5));
    let page_ref = |i: usize| Ref::new(6 + 2 * i as i32);
    let content_ref = |i: usize| Ref::new(7 + 2 * i as i32);
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids((0..pages.len()).map(page_ref))
        .count(pages.len() as i32);
    pdf.type1_font(font)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.document_info(info)
        .title(TextStr(&title(r)))
        .producer(TextStr(concat!("fleet-server ", env!("CARGO_PKG_VERSION"))));
    for (i, page) in pages.iter().enumerate() {
        let mut c = Content::new();
        let mut y = PAGE_H - MARGIN;
        let text = |c: &mut Content, f: Name, size: f32, x: f32, y: f32, s: &str| {
            c.begin_text();
            c.set_font(f, size);
            c.next_line(x, y);
            c.show(Str(&latin1(s)));
            c.end_text();
        };
        for line in page.iter() {
            match line {
                Line::Heading(s) => text(&mut c, Name(b"F2"), SIZE + 3.0, MARGIN, y, s),
                Line::Text(s) => text(&mut c, Name(b"F1"), SIZE, MARGIN, y, s),
                Line::Row(cells) => {
                    for (x, s) in COLS.iter().zip(cells) {
                        text(&mut c, Name(b"F1"), SIZE, *x, y, s);
                    }
                }
            }
            y -= LINE;
        }
        text(
            &mut c,
            Name(b"F1"),
            SIZE - 1.0,
            MARGIN,
            MARGIN / 2.0,
            &format!("page {} of {}", i + 1, pages.len()),
        );
        let mut p = pdf.page(page_ref(i));
        p.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H))
            .parent(tree)
            .contents(content_ref(i));
        p.resources()
            .fonts()
            .pair(Name(b"F1"), font)
            .pair(Name(b"F2"), bold);
        drop(p);
        pdf.stream(content_ref(i), &c.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_outside_latin1_becomes_a_question_mark() {
        assert_eq!(latin1("Tromsø €"), b"Troms\xf8 ?");
    }

    #[test]
    fn paragraphs_wrap_at_the_width() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
    }
}
