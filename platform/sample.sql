-- Sample data for the reference schema: two companies in different time
-- zones, a few users and assets each.
INSERT INTO companies (id, name, time_zone) VALUES
    (1, 'PT Kahatex', 'Asia/Jakarta'),
    (2, 'Nordwerk GmbH', 'Europe/Berlin');
SELECT setval('companies_id_seq', 2);

INSERT INTO users (id, company_id, email, full_name, role) VALUES
    (1, 1, 'admin@kahatex.example',   'Sari Wijaya',    'admin'),
    (2, 1, 'super@kahatex.example',   'Budi Santoso',   'supervisor'),
    (3, 1, 'tech1@kahatex.example',   'Agus Pratama',   'technician'),
    (4, 1, 'tech2@kahatex.example',   'Dewi Lestari',   'technician'),
    (5, 2, 'admin@nordwerk.example',  'Jana Keller',    'admin'),
    (6, 2, 'super@nordwerk.example',  'Lukas Brandt',   'supervisor'),
    (7, 2, 'tech1@nordwerk.example',  'Mia Schulz',     'technician');
SELECT setval('users_id_seq', 7);

INSERT INTO assets (id, company_id, name, location) VALUES
    (1, 1, 'Loom 12',            'Weaving hall B'),
    (2, 1, 'Boiler 2',           'Utility building'),
    (3, 2, 'CNC mill 4',         'Hall 3'),
    (4, 2, 'Compressor K1',      'Basement');
SELECT setval('assets_id_seq', 4);
