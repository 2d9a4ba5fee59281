//! Part `make`: real work, `make -j2` of a generated C project from clean,
//! with and without procespy.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use super::{
    Env, Part,
    goals::{Bound, Goal},
};
use crate::bench::{
    procs::TempDir,
    stats::{Table, median, quotient, ratio, show_spread},
};

const FILES: usize = 400;

/// Writes a C project of `files` small translation units and a Makefile.
fn c_project(dir: &Path, files: usize) -> Result<()> {
    let src = dir.join("src");
    fs::create_dir_all(&src)?;
    let mut main = String::from("#include <stdio.h>\n");
    for i in 0..files {
        let text = format!(
            "#include <string.h>\n\
             struct item{i} {{ int key; double weight; char name[32]; }};\n\
             static int compare{i}(const struct item{i} *a, const struct item{i} *b) {{\n\
             \treturn a->key != b->key ? a->key - b->key : strcmp(a->name, b->name);\n}}\n\
             int unit{i}(int n) {{\n\
             \tstruct item{i} items[64];\n\
             \tfor (int j = 0; j < 64; j++) {{ items[j].key = (j * {i} + n) % 97; \
             items[j].weight = j / 3.0; memset(items[j].name, 'a' + j % 26, 31); items[j].name[31] = 0; }}\n\
             \tint sum = 0;\n\
             \tfor (int j = 1; j < 64; j++) sum += compare{i}(&items[j - 1], &items[j]) > 0;\n\
             \tfor (int j = 0; j < 64; j++) sum += (int)(items[j].weight * {i}) % 7;\n\
             \treturn sum;\n}}\n"
        );
        fs::write(src.join(format!("unit{i}.c")), text)?;
        let _ = writeln!(main, "int unit{i}(int n);");
    }
    main.push_str("int main(void) {\n\tint sum = 0;\n");
    for i in 0..files {
        let _ = writeln!(main, "\tsum += unit{i}({i});");
    }
    main.push_str("\tprintf(\"%d\\n\", sum);\n\treturn 0;\n}\n");
    fs::write(src.join("main.c"), main)?;
    fs::write(
        dir.join("Makefile"),
        "SRCS := $(wildcard src/*.c)\nOBJS := $(SRCS:.c=.o)\n\n\
         prog: $(OBJS)\n\tgcc -o $@ $^\n\n%.o: %.c\n\tgcc -O2 -c -o $@ $<\n\n\
         clean:\n\trm -f src/*.o prog\n",
    )?;
    Ok(())
}

/// Seconds `make -j2` takes from clean, with procespy running or not.
fn make_once(env: &Env, dir: &Path, with_procespy: bool) -> Result<f64> {
    let quiet = |cmd: &mut Command| {
        cmd.current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
    };
    let mut clean = Command::new("make");
    clean.arg("clean");
    quiet(&mut clean);
    clean.status().context("make clean")?;
    let daemon = with_procespy.then(|| env.daemon(None, false)).transpose()?;
    let mut make = Command::new("make");
    make.args(["-j2", "-s"]);
    quiet(&mut make);
    let start = Instant::now();
    let output = make.output().context("running make (is gcc installed?)")?;
    let seconds = start.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "make -j2 failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    drop(daemon);
    Ok(seconds)
}

pub fn run(env: &Env) -> Result<Part> {
    let runs = env.settings.make_runs;
    let scratch = TempDir::new("make")?;
    c_project(scratch.path(), FILES).context("writing the C project")?;
    let mut times = [Vec::new(), Vec::new()];
    for run in 0..runs {
        for (with, times) in [false, true].into_iter().zip(&mut times) {
            let seconds = make_once(env, scratch.path(), with)?;
            println!(
                "overhead: make run {}/{runs} {}: {seconds:.2} s",
                run + 1,
                if with { "with procespy" } else { "without" }
            );
            times.push(seconds);
        }
    }
    let (without, with) = (median(&times[0]), median(&times[1]));
    let mut table = Table::new(&["make -j2", "wall (s)", "vs without"]);
    table.row(vec![
        "without procespy".into(),
        show_spread(&times[0], 2),
        "—".into(),
    ]);
    table.row(vec![
        "procespy eBPF, a limit covering another process".into(),
        show_spread(&times[1], 2),
        ratio(with, without),
    ]);
    let value = quotient(with, without);
    let goal = Goal::new(
        format!("make -j2, {runs} interleaved runs each"),
        Bound::AtMost(1.02),
        "×",
        value,
        value.map_or("?".into(), |v| format!("{v:.3}×")),
    );
    let text = format!(
        "\n### Real work: make -j2\n\n\
         A generated C project ({FILES} files plus main.c, gcc -O2) built from clean with \
         `make -j2`, {runs} runs each, with and without alternating run by run, a fresh daemon \
         each run. Medians (range); the ratio is of the medians.\n\n{}",
        table.render()
    );
    Ok(Part {
        goals: vec![goal],
        text,
    })
}
