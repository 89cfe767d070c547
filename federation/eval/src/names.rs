//! Name pools: given names by sex and family names for each group, most common first;
//! sibling names that look or sound alike; nicknames and spellings in real use.
//!
//! These are this project's own lists, written for the evaluation: they are not drawn
//! from any record-linkage benchmark.

use crate::corrupt::strip_accents;
/// Where a household's names come from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Group {
    English,
    Irish,
    SouthAsian,
    Polish,
    WestAfrican,
    Italian,
    Greek,
    Vietnamese,
    /// Written in Cyrillic by some systems and in Latin letters by others.
    Ukrainian,
}

impl Group {
    /// Every group, for the population's mix.
    pub const ALL: [Group; 9] = [
        Group::English,
        Group::Irish,
        Group::SouthAsian,
        Group::Polish,
        Group::WestAfrican,
        Group::Italian,
        Group::Greek,
        Group::Vietnamese,
        Group::Ukrainian,
    ];
}

/// Comma-separated name lists, most common first.
pub struct Names {
    pub boys: &'static str,
    pub girls: &'static str,
    pub families: &'static str,
}

pub fn list(names: &'static str) -> Vec<&'static str> {
    names.split(',').map(str::trim).collect()
}

pub fn names(group: Group) -> Names {
    match group {
        Group::English => Names {
            boys: "Oliver, George, Harry, Jack, Noah, Charlie, Thomas, Oscar, William, James, Leo, \
                Alfie, Henry, Joshua, Freddie, Archie, Ethan, Isaac, Alexander, Joseph, Edward, \
                Samuel, Max, Daniel, Arthur, Lucas, Logan, Theo, Harrison, Benjamin, Mason, \
                Sebastian, Finley, Adam, Dylan, Zachary, Riley, Teddy, David, Elijah, Jake, Toby, \
                Louis, Reuben, Matthew, Michael, Robert, Stephen, Anthony, Nicholas, Andrew, Sam, \
                Lewis, Kai, Tyler, Callum, Kyle, Jayden, Luke, Ryan, Liam, Aaron, Jordan, Jamie, \
                Bradley, Nathan, Connor, Owen, Leon, Aiden",
            girls: "Olivia, Amelia, Isla, Ava, Mia, Isabella, Sophia, Grace, Lily, Freya, Emily, Ivy, \
                Ella, Rosie, Evie, Florence, Poppy, Charlotte, Willow, Isabelle, Elsie, Sienna, \
                Daisy, Sophie, Alice, Jessica, Phoebe, Ruby, Matilda, Elizabeth, Katherine, \
                Catherine, Margaret, Rebecca, Jennifer, Victoria, Susan, Chloé, Zoë, Renée, Hannah, \
                Megan, Lauren, Amy, Holly, Ellie, Leah, Abigail, Bethany, Courtney, Jade, Paige, \
                Shannon, Kayleigh, Danielle, Louise, Emma, Maya, Nicola, Harriet",
            families: "Smith, Jones, Williams, Taylor, Brown, Davies, Evans, Wilson, Thomas, Johnson, \
                Roberts, Robinson, Thompson, Wright, Walker, White, Edwards, Hughes, Green, Hall, \
                Lewis, Harris, Clarke, Jackson, Wood, Turner, Martin, Cooper, Hill, Ward, Morris, \
                Moore, Clark, Lee, King, Baker, Harrison, Morgan, Allen, James, Scott, Phillips, \
                Watson, Davis, Parker, Price, Bennett, Young, Griffiths, Mitchell, Kelly, Cook, \
                Carter, Richardson, Bailey, Collins, Bell, Shaw, Miller, Cox, Richards, Marshall, \
                Anderson, Simpson, Ellis, Adams, Wilkinson, Foster, Chapman, Lloyd, Webb, Powell, \
                Holmes, Mason, Rogers, Stevens, Palmer, Thomson, McDonald, St. John, Fox, Ashworth, \
                Pennington",
        },
        Group::Irish => Names {
            boys: "Seán, Oisín, Cian, Darragh, Eoin, Pádraig, Ciarán, Fionn, Conor, Declan, Liam, \
                Patrick, Aidan, Niall, Ronan, Cathal, Tadhg, Shane",
            girls: "Siobhán, Niamh, Aoife, Ciara, Caoimhe, Saoirse, Orla, Róisín, Sinéad, Aisling, \
                Clodagh, Gráinne, Méabh, Éabha, Mary, Bridget",
            families: "O'Brien, O'Connor, O'Sullivan, Murphy, Kelly, Walsh, Byrne, Ryan, O'Neill, Doyle, \
                McCarthy, Gallagher, Ó Súilleabháin, McLaughlin, Quinn, Kennedy, Lynch, Murray, \
                Fitzgerald, Mac Giolla Phádraig, O'Donnell, Ó Briain, Nic Aodha, Brennan, Ó \
                Ceallaigh",
        },
        Group::SouthAsian => Names {
            boys: "Mohammed, Muhammad, Ahmed, Ali, Hassan, Hussain, Ibrahim, Yusuf, Zain, Ayaan, Arjun, \
                Aarav, Rohan, Vikram, Rahul, Amir, Imran, Bilal, Hamza, Omar, Abdul Rahman, \
                Mohammad, Ismail, Harpreet, Gurpreet",
            girls: "Aisha, Ayesha, Fatima, Maryam, Zainab, Amira, Priya, Ananya, Aanya, Saanvi, Anika, \
                Simran, Noor, Hafsa, Sana, Mehreen, Riya, Isha, Khadija, Amna, Nur",
            families: "Patel, Khan, Singh, Begum, Ahmed, Ali, Hussain, Shah, Sharma, Kaur, Iqbal, Rahman, \
                Chaudhry, Malik, Akhtar, Mahmood, Qureshi, Bibi, Mistry, Gupta, Das, Islam, Uddin, \
                Miah, D'Souza, Fernandes, Choudhury, Siddiqui",
        },
        Group::Polish => Names {
            boys: "Jakub, Kacper, Szymon, Mateusz, Filip, Michał, Bartosz, Wojciech, Łukasz, Tomasz, \
                Piotr, Krzysztof, Paweł, Jan, Antoni, Igor",
            girls: "Zuzanna, Julia, Maja, Zofia, Hanna, Lena, Alicja, Małgorzata, Katarzyna, Agnieszka, \
                Wiktoria, Natalia, Aleksandra, Magdalena, Oliwia, Jana",
            families: "Nowak, Kowalski, Wiśniewski, Wójcik, Kowalczyk, Kamiński, Lewandowski, Zieliński, \
                Szymański, Woźniak, Dąbrowski, Kozłowski, Jankowski, Mazur, Kwiatkowski, Krawczyk, \
                Piotrowski, Grabowski, Nowakowski, Pawłowski",
        },
        Group::WestAfrican => Names {
            boys: "Chidi, Chinedu, Emeka, Obinna, Tunde, Femi, Kwame, Kofi, Kwabena, Oluwaseun, \
                Ayodele, Babajide, Chukwuemeka, Ikenna, Ifeanyi, Yaw, Daniel, David, Samuel, \
                Emmanuel",
            girls: "Adaeze, Chiamaka, Ngozi, Funmilayo, Abena, Ama, Akosua, Folake, Temitope, Blessing, \
                Precious, Chioma, Nneka, Adwoa, Efua, Yetunde, Chidera, Grace, Esther",
            families: "Okafor, Okonkwo, Adeyemi, Mensah, Owusu, Boateng, Asante, Adebayo, Okeke, Nwosu, \
                Eze, Oyelaran, Olawale, Babatunde, Afolabi, Ogunleye, Appiah, Osei, Danso, Agyeman, \
                N'Diaye, Diallo, Obi, Nwachukwu",
        },
        Group::Italian => Names {
            boys: "Marco, Giuseppe, Luca, Giovanni, Antonio, Francesco, Matteo, Alessandro, Lorenzo, \
                Salvatore, Vincenzo, Domenico, Pietro, Nicola, Stefano, Angelo",
            girls: "Giulia, Francesca, Maria, Chiara, Sofia, Giovanna, Rosa, Anna, Elena, Lucia, \
                Alessia, Martina, Teresa, Caterina, Angela, Carmela",
            families: "Rossi, Russo, Ferrari, Esposito, Bianchi, Romano, Colombo, Ricci, Marino, Greco, \
                Bruno, Gallo, Conti, De Luca, Costa, Giordano, Mancini, Rizzo, Lombardi, Moretti, \
                Barbieri, Di Stefano, Lo Presti, D'Angelo",
        },
        Group::Greek => Names {
            boys: "Georgios, Konstantinos, Dimitrios, Ioannis, Nikolaos, Panagiotis, Christos, \
                Vasileios, Athanasios, Spyridon, Evangelos, Stavros",
            girls: "Maria, Eleni, Aikaterini, Vasiliki, Sofia, Angeliki, Georgia, Dimitra, \
                Konstantina, Paraskevi, Christina, Despina",
            families: "Papadopoulos, Papadakis, Georgiou, Dimitriou, Nikolaou, Konstantinidis, \
                Karagiannis, Vasileiou, Ioannou, Papageorgiou, Christodoulou, Alexiou, \
                Economou, Pappas, Stavrou, Antoniou",
        },
        Group::Vietnamese => Names {
            boys: "Minh, Duc, Huy, Tuan, Long, Khoa, Quang, Thanh, Hoang, Nam, Phuc, Bao",
            girls: "Linh, Thao, Lan, Mai, Huong, Trang, Ngoc, Anh, Hoa, Thu, Phuong, Vy",
            families: "Nguyen, Tran, Le, Pham, Hoang, Huynh, Phan, Vu, Vo, Dang, Bui, Do, Ho, \
                Ngo, Duong, Ly",
        },
        Group::Ukrainian => Names {
            boys: "Олександр, Андрій, Дмитро, Максим, Іван, Сергій, Михайло, Тарас, Богдан, Юрій, \
                Віктор, Олег",
            girls: "Марія, Анастасія, Олена, Катерина, Юлія, Наталія, Ірина, Оксана, Софія, \
                Дарина, Тетяна, Вікторія",
            families: "Шевченко, Коваленко, Бондаренко, Ткаченко, Кравченко, Олійник, Шевчук, \
                Поліщук, Бойко, Мельник, Коваль, Лисенко, Марченко, Руденко, Савченко, Петренко",
        },
    }
}

/// The usual Latin spelling of a name written in Cyrillic (Ukraine's national
/// transliteration, as passports and most case systems write it): what a system that
/// holds only Latin letters records for the same person.
pub fn latin_spelling(cyrillic: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = cyrillic.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let first = i == 0 || !chars[i - 1].is_alphabetic();
        let lower = c.to_lowercase().next().unwrap_or(*c);
        let latin = match lower {
            'а' => "a",
            'б' => "b",
            'в' => "v",
            'г' => "h",
            'ґ' => "g",
            'д' => "d",
            'е' => "e",
            'є' => {
                if first {
                    "ye"
                } else {
                    "ie"
                }
            }
            'ж' => "zh",
            'з' => "z",
            'и' => "y",
            'і' => "i",
            'ї' => {
                if first {
                    "yi"
                } else {
                    "i"
                }
            }
            'й' => {
                if first {
                    "y"
                } else {
                    "i"
                }
            }
            'к' => "k",
            'л' => "l",
            'м' => "m",
            'н' => "n",
            'о' => "o",
            'п' => "p",
            'р' => "r",
            'с' => "s",
            'т' => "t",
            'у' => "u",
            'ф' => "f",
            'х' => "kh",
            'ц' => "ts",
            'ч' => "ch",
            'ш' => "sh",
            'щ' => "shch",
            'ь' | '\'' | '’' => "",
            'ю' => {
                if first {
                    "yu"
                } else {
                    "iu"
                }
            }
            'я' => {
                if first {
                    "ya"
                } else {
                    "ia"
                }
            }
            other => {
                out.push(other);
                continue;
            }
        };
        if c.is_uppercase() {
            let mut letters = latin.chars();
            if let Some(head) = letters.next() {
                out.extend(head.to_uppercase());
                out.push_str(letters.as_str());
            }
        } else {
            out.push_str(latin);
        }
    }
    out
}

/// Sibling or twin names that look or sound alike (some identical in Double Metaphone).
pub const LOOK_ALIKES: &[(&str, &str)] = &[
    ("Sam", "Sean"),
    ("Jack", "Jake"),
    ("Hassan", "Hussain"),
    ("Mia", "Maya"),
    ("Daniel", "Danielle"),
    ("Louis", "Louise"),
    ("Leo", "Leon"),
    ("Amir", "Amira"),
    ("Chidi", "Chidera"),
    ("Jan", "Jana"),
    ("Nicholas", "Nicola"),
    ("Harry", "Harriet"),
    ("Oliver", "Olivia"),
    ("Ella", "Emma"),
    ("Zain", "Zainab"),
    ("Kyle", "Kayleigh"),
];

/// Whether two given names are the same name to a person: equal but for case and
/// accents, spelling variants, or a nickname and its formal name. Parents do not give two
/// children the same name, so the look-alike generator must not either.
pub fn same_name(a: &str, b: &str) -> bool {
    let plain = |s: &str| strip_accents(s).to_lowercase();
    let (a, b) = (plain(a), plain(b));
    if a == b {
        return true;
    }
    let variants = VARIANTS.iter().any(|group| {
        let group: Vec<String> = group.iter().map(|v| plain(v)).collect();
        group.contains(&a) && group.contains(&b)
    });
    let nicknames = NICKNAMES_IN_USE.iter().any(|(formal, nicks)| {
        let mut names: Vec<String> = nicks.iter().map(|n| plain(n)).collect();
        names.push(plain(formal));
        names.contains(&a) && names.contains(&b)
    });
    variants || nicknames
}

/// Nicknames used in practice: some in the key table, some deliberately not.
pub const NICKNAMES_IN_USE: &[(&str, &[&str])] = &[
    ("William", &["Bill", "Will", "Billy", "Liam"]),
    ("Robert", &["Rob", "Bob", "Robbie"]),
    ("Elizabeth", &["Liz", "Lizzie", "Beth", "Betsy"]),
    ("James", &["Jim", "Jimmy", "Jamie"]),
    ("Michael", &["Mike", "Mick", "Mikey"]),
    ("Thomas", &["Tom", "Tommy"]),
    ("David", &["Dave", "Davy"]),
    ("Katherine", &["Kate", "Katie"]),
    ("Catherine", &["Kate", "Katie", "Cathy"]),
    ("Daniel", &["Dan", "Danny"]),
    ("Matthew", &["Matt"]),
    ("Benjamin", &["Ben"]),
    ("Joseph", &["Joe", "Joey"]),
    ("Anthony", &["Tony", "Ant"]),
    ("Andrew", &["Andy", "Drew"]),
    ("Rebecca", &["Becky", "Becca"]),
    ("Jennifer", &["Jenny", "Jen"]),
    ("Victoria", &["Vicky", "Tori"]),
    ("Margaret", &["Maggie", "Peggy"]),
    ("Stephen", &["Steve", "Stevie"]),
    ("Nicholas", &["Nick"]),
    ("Alexander", &["Alex", "Xander"]),
    ("Samuel", &["Sam", "Sammy"]),
    ("Edward", &["Ed", "Eddie", "Ted"]),
    ("Isabella", &["Izzy", "Bella"]),
    ("Jakub", &["Kuba"]),
    ("Katarzyna", &["Kasia"]),
    ("Małgorzata", &["Gosia"]),
    ("Tomasz", &["Tomek"]),
    ("Bartosz", &["Bartek"]),
    ("Wojciech", &["Wojtek"]),
];

/// Spellings of the same name that different systems hold.
pub const VARIANTS: &[&[&str]] = &[
    &["Mohammed", "Muhammad", "Mohammad", "Mohamed"],
    &["Aisha", "Ayesha"],
    &["Katherine", "Catherine", "Kathryn"],
    &["Stephen", "Steven"],
    &["Seán", "Shaun", "Shawn"],
    &["Zoë", "Zoey"],
    &["Isabelle", "Isabel", "Isobel"],
    &["Hannah", "Hanna"],
    &["Ahmed", "Ahmad"],
    &["Hussain", "Hussein", "Husain"],
    &["Chloé", "Chloe"],
    &["Sophie", "Sofie"],
    &["Aidan", "Aiden", "Aden"],
    &["Lily", "Lilly"],
    &["Jayden", "Jaden"],
    &["Chaudhry", "Choudhury", "Chowdhury"],
    &["McDonald", "MacDonald"],
    &["Thomson", "Thompson"],
    &["Siobhán", "Shevaun"],
    &["Oluwaseun", "Seun"],
    &["Fatima", "Fatimah"],
    &["Maryam", "Mariam"],
    &["Yusuf", "Yousef", "Yusef"],
    &["Zofia", "Sofia"],
    &["Oliwia", "Olivia"],
    &["Wiktoria", "Victoria"],
    &["Aleksandra", "Alexandra"],
    &["Ayaan", "Ayan"],
    &["Kwame", "Kwami"],
];
