//! `static/sightline.js` as a typed package: its declarations
//! (`static/sightline.d.ts`) pass `tsc --strict` over an example that uses
//! every export, and `npm pack` makes a package of it. TypeScript is pinned
//! in e2e/package-lock.json (scripts/tools installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e} (scripts/tools installs it)"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_declarations_pass_tsc_strict_over_an_example_using_every_export() {
    let tsc = repo("e2e/node_modules/.bin/tsc");
    assert!(
        tsc.exists(),
        "{} is missing: run scripts/tools",
        tsc.display()
    );
    run(Command::new(&tsc)
        .args(["--noEmit", "--strict", "-p", "tsconfig.json"])
        .current_dir(repo("e2e")));

    // Every export of the module is declared and used by the example.
    let module = std::fs::read_to_string(repo("static/sightline.js")).unwrap();
    let declarations = std::fs::read_to_string(repo("static/sightline.d.ts")).unwrap();
    let example = std::fs::read_to_string(repo("e2e/typecheck/example.ts")).unwrap();
    let exports: Vec<&str> = module
        .lines()
        .filter_map(|l| {
            let rest = l
                .strip_prefix("export async function ")
                .or_else(|| l.strip_prefix("export function "))
                .or_else(|| l.strip_prefix("export class "))?;
            rest.split(['(', ' ']).next()
        })
        .collect();
    assert_eq!(exports.len(), 11, "{exports:?}");
    for name in exports {
        assert!(
            declarations.contains(&format!("function {name}("))
                || declarations.contains(&format!("class {name} ")),
            "{name} is not declared in sightline.d.ts"
        );
        assert!(
            example.contains(&format!("  {name},")),
            "the example does not import {name}"
        );
    }
    // JSDoc on every export.
    let lines: Vec<&str> = module.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("export ") {
            assert_eq!(lines[i - 1].trim(), "*/", "no JSDoc above `{line}`");
        }
    }
}

#[test]
fn npm_pack_makes_a_package_of_the_module_and_its_types() {
    let listing = run(Command::new("npm")
        .args(["pack", "--dry-run", "--json"])
        .current_dir(repo("static")));
    let packs: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let mut files: Vec<&str> = packs[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["package.json", "sightline.d.ts", "sightline.js"]);
}
