//! The pages' forms over plain HTTP, with a cookie-keeping client and no
//! browser: statuses, redirects, cookies, static files.

use reqwest::StatusCode;
use reqwest::header;
use uuid::Uuid;

use crate::helpers::spawn_app;

const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn pages_answer_forms_without_a_browser() {
    let app = spawn_app().await;
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let location = |r: &reqwest::Response| {
        r.headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };

    let r = browser.get(app.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/orders");
    let r = browser.get(app.url("/orders")).send().await.unwrap();
    assert!(r.status().is_redirection());
    assert_eq!(location(&r), "/login");

    for (path, content_type) in [
        ("/static/app.js", "text/javascript"),
        ("/static/sightline.js", "text/javascript"),
        ("/static/sightline.css", "text/css"),
        // Browsers ask for /favicon.ico whatever a page links: no 404.
        ("/favicon.ico", "image/svg+xml"),
        ("/static/favicon.svg", "image/svg+xml"),
    ] {
        let r = browser.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(
            r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        let etag = r.headers()[header::ETAG].clone();
        assert!(!r.text().await.unwrap().is_empty());
        let again = browser
            .get(app.url(path))
            .header(header::IF_NONE_MATCH, etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }

    let username = format!("p{}", &Uuid::new_v4().simple().to_string()[..12]);
    let form = |u: &str, p: &str| [("username", u.to_owned()), ("password", p.to_owned())];

    let r = browser
        .post(app.url("/signup"))
        .form(&form(&username, "short"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("Password must be 8 to 128 characters"),
        "{body}"
    );
    assert!(
        body.contains(&format!(r#"value="{username}""#)),
        "keeps the name"
    );

    let r = browser
        .post(app.url("/signup"))
        .form(&form(&username, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/orders");
    assert!(r.headers().contains_key(header::SET_COOKIE));

    let r = browser
        .post(app.url("/signup"))
        .form(&form(&username, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("That username is taken"));

    let r = browser
        .post(app.url("/login"))
        .form(&form(&username, "wrong password!"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Wrong username or password")
    );

    let r = browser
        .post(app.url("/login"))
        .form(&form(&username, PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/orders");

    let r = browser.get(app.url("/orders")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(body.contains(r#"data-lag-slo-ms="5000""#), "{body}");
    assert!(body.contains(r#"aria-live="polite""#));
    assert!(body.contains("No orders yet"));

    let order = |quantity: &str| {
        [
            ("id", Uuid::new_v4().to_string()),
            ("sku", "FORM-1".to_owned()),
            ("quantity", quantity.to_owned()),
            ("unit_price_cents", "1999".to_owned()),
            ("note", String::new()),
        ]
    };
    let r = browser
        .post(app.url("/orders"))
        .form(&order("two"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Quantity must be a whole number")
    );
    let r = browser
        .post(app.url("/orders"))
        .form(&order("0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Quantity must be between 1 and 1,000")
    );

    let r = browser
        .post(app.url("/orders"))
        .header(header::ORIGIN, "http://evil.example")
        .form(&order("1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "cross-site form refused");

    let placed = order("3");
    let id = placed[0].1.clone();
    let r = browser
        .post(app.url("/orders"))
        .form(&placed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let next = location(&r);
    assert!(next.starts_with("/orders?consistency_token="), "{next}");
    let body = browser
        .get(app.url(&next))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains(&format!(r#"data-order-id="{id}""#)),
        "read-your-writes: {body}"
    );
    assert!(body.contains("FORM-1 × 3") && body.contains("59.97"));
    // Submitting the same form again places nothing new.
    let r = browser
        .post(app.url("/orders"))
        .form(&placed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 1);

    let r = browser.post(app.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login");
    let r = browser.get(app.url("/orders")).send().await.unwrap();
    assert_eq!(location(&r), "/login", "signed out");
}

/// The order form without JavaScript: item lines are added and removed by
/// round trips (values kept), prices are typed in dollars, every broken rule
/// is next to its field with the values kept, and a multi-item order places.
#[tokio::test]
async fn the_order_form_works_without_javascript() {
    let app = spawn_app().await;
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let username = format!("n{}", &Uuid::new_v4().simple().to_string()[..12]);
    let r = browser
        .post(app.url("/signup"))
        .form(&[("username", username.as_str()), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let post = |pairs: Vec<(&'static str, &'static str)>| {
        browser.post(app.url("/orders")).form(&pairs).send()
    };

    // "Add another item": the page again, with a second line, values kept.
    let r = post(vec![
        ("sku", "LINE-ONE"),
        ("quantity", "2"),
        ("unit_price", "12.50"),
        ("add_item", "1"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(body.contains(r#"id="sku-2""#), "a second line");
    assert!(body.contains(r#"value="LINE-ONE""#) && body.contains(r#"value="12.50""#));
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);

    // "Remove" on line 1: line 2 becomes line 1.
    let r = post(vec![
        ("sku", "LINE-ONE"),
        ("quantity", "2"),
        ("unit_price", "12.50"),
        ("sku", "LINE-TWO"),
        ("quantity", "1"),
        ("unit_price", "3"),
        ("remove_item", "0"),
    ])
    .await
    .unwrap();
    let body = r.text().await.unwrap();
    assert!(!body.contains(r#"id="sku-2""#) && body.contains(r#"value="LINE-TWO""#));
    assert!(!body.contains(r#"value="LINE-ONE""#));

    // Every broken rule, next to its field, values kept; nothing placed.
    let r = post(vec![
        ("sku", ""),
        ("quantity", "0"),
        ("unit_price", "twelve"),
        ("sku", "OK"),
        ("quantity", "1"),
        ("unit_price", "100000.01"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    for (id, message) in [
        ("sku", "SKU is required"),
        ("quantity", "Quantity must be between 1 and 1,000"),
        ("unit_price", "Price must be an amount such as 12.50"),
        (
            "unit_price-2",
            "Price must be between $0.00 and $100,000.00",
        ),
    ] {
        assert!(
            body.contains(&format!(r#"aria-describedby="{id}-error""#)),
            "{id} is marked"
        );
        assert!(
            body.contains(&format!(r#"id="{id}-error" >{message}</p>"#)),
            "{id}: {message}"
        );
    }
    assert!(body.contains(r#"value="twelve""#), "the value is kept");
    assert!(body.contains("4 things need fixing"));
    assert_eq!(app.count("SELECT count(*) FROM orders").await, 0);

    // Two lines, prices in dollars: placed, with the right total.
    let r = post(vec![
        ("sku", "LINE-ONE"),
        ("quantity", "2"),
        ("unit_price", "12.50"),
        ("sku", "LINE-TWO"),
        ("quantity", "3"),
        ("unit_price", "$1,000"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let total: i64 = sqlx::query_scalar("SELECT total_cents FROM orders")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(total, 2 * 1250 + 3 * 100_000);
}
